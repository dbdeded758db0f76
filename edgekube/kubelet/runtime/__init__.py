"""The container runtime layer of the kubelet: runc containers with OCI bundles, overlay
rootfs, cgroups and CRI log files, that outlive edgekube and are adopted after a restart.

Modules: `runc` (the binary, asyncio), `bundle` (config.json and the overlay rootfs),
`seccomp` (the RuntimeDefault profile), `cgroups` (QoS and pod parents, limits, usage, OOM),
`crilog` (FIFOs into CRI log files), `exits` (how an exit and its code are learnt),
`containers` (the `Runtime` the pod workers drive: create, start, stop, remove, adopt, sweep).
"""
