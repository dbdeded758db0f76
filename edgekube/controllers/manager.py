"""The controller manager: every controller of the control plane, over shared informers.

`build()` makes the controllers from one `Context` (the in-process client, the shared informer
factory, the event recorder, the clock and the settings); the runtime starts the informers the
controllers asked for, then the controllers. A new controller is one more line in `build()`.
"""

from __future__ import annotations

import dataclasses

from edgekube import config as config_mod
from edgekube._cogs import clock as clock_mod
from edgekube.api import metrics as metrics_mod
from edgekube.client.events import EventRecorder
from edgekube.client.informer import InformerFactory
from edgekube.client.local import LocalClient
from edgekube.controllers import (
    apiservices,
    cronjob,
    daemonset,
    deployment,
    endpoints,
    endpointslices,
    garbage_collector,
    job,
    namespace,
    nodelifecycle,
    podautoscaler,
    replicaset,
    resourcequota,
    serviceaccounts,
    statefulset,
    tokens,
    ttlafterfinished,
)
from edgekube.controllers.base import Controller


@dataclasses.dataclass(frozen=True)
class Context:
    client: LocalClient
    informers: InformerFactory
    events: EventRecorder
    clock: clock_mod.Clock
    settings: config_mod.ControllerSettings
    ca_pem: str
    local_node: str = ""  # the node this process's own kubelet runs (never evicted by node lifecycle)
    metrics: metrics_mod.MetricsStore = dataclasses.field(default_factory=metrics_mod.MetricsStore)
    # The legacy service account token signer (api/auth/satokens.py); None: no token controller.
    sign_legacy_token: tokens.Sign | None = None


def build(ctx: Context) -> tuple[list[Controller], garbage_collector.GarbageCollector]:
    """The controllers, and the garbage collector (whose graph watch the runtime also starts)."""
    inf = ctx.informers
    namespaces = inf.get("v1", "Namespace")
    gc = garbage_collector.GarbageCollector(ctx.client)
    controllers: list[Controller] = [
        namespace.NamespaceController(ctx.client, namespaces),
        serviceaccounts.ServiceAccountController(
            ctx.client, namespaces, inf.get("v1", "ServiceAccount"),
            inf.get("v1", "ConfigMap", name=serviceaccounts.ROOT_CA), ca_pem=ctx.ca_pem),
        endpoints.EndpointsController(ctx.client, inf.get("v1", "Service"), inf.get("v1", "Pod"), inf.get("v1", "Endpoints"), ctx.events.for_component("endpoint-controller")),
        endpointslices.EndpointSliceController(ctx.client, inf.get("v1", "Service"), inf.get("v1", "Pod"), inf.get("discovery.k8s.io/v1", "EndpointSlice"), inf.get("v1", "Node"), ctx.events.for_component("endpoint-slice-controller")),
        endpointslices.EndpointSliceMirroringController(ctx.client, inf.get("v1", "Service"), inf.get("v1", "Endpoints"), inf.get("discovery.k8s.io/v1", "EndpointSlice"), ctx.events.for_component("endpoint-slice-mirroring-controller")),
        gc,
        apiservices.APIServiceRegistrationController(
            ctx.client, inf.get("apiregistration.k8s.io/v1", "APIService"),
            inf.get("apiextensions.k8s.io/v1", "CustomResourceDefinition"), clock=ctx.clock),
        replicaset.ReplicaSetController(ctx.client, inf.get("apps/v1", "ReplicaSet"), inf.get("v1", "Pod"),
                                        ctx.events.for_component("replicaset-controller"), clock=ctx.clock),
        replicaset.ReplicationManager(ctx.client, inf.get("v1", "ReplicationController"), inf.get("v1", "Pod"),
                                      ctx.events.for_component("replication-controller"), clock=ctx.clock),
        deployment.DeploymentController(ctx.client, inf.get("apps/v1", "Deployment"), inf.get("apps/v1", "ReplicaSet"),
                                         inf.get("v1", "Pod"), ctx.events.for_component("deployment-controller"),
                                         clock=ctx.clock),
        nodelifecycle.NodeLifecycleController(
            ctx.client, inf.get("v1", "Node"), inf.get("coordination.k8s.io/v1", "Lease"), inf.get("v1", "Pod"),
            ctx.events.for_component("node-controller"), clock=ctx.clock,
            grace_seconds=ctx.settings.node_monitor_grace_period_seconds, local_node=ctx.local_node),
        nodelifecycle.TaintEvictionController(
            ctx.client, inf.get("v1", "Node"), inf.get("v1", "Pod"), ctx.events.for_component("taint-eviction-controller"),
            clock=ctx.clock, local_node=ctx.local_node),
        job.JobController(ctx.client, inf.get("batch/v1", "Job"), inf.get("v1", "Pod"), ctx.events.for_component("job-controller"), clock=ctx.clock),
        ttlafterfinished.TTLAfterFinishedController(ctx.client, inf.get("batch/v1", "Job"), clock=ctx.clock),
        cronjob.CronJobController(ctx.client, inf.get("batch/v1", "CronJob"), inf.get("batch/v1", "Job"), ctx.events.for_component("cronjob-controller"), clock=ctx.clock),
        daemonset.DaemonSetController(ctx.client, inf.get("apps/v1", "DaemonSet"), inf.get("v1", "Pod"), inf.get("v1", "Node"), inf.get("apps/v1", "ControllerRevision"), ctx.events.for_component("daemonset-controller"), clock=ctx.clock),
        statefulset.StatefulSetController(ctx.client, inf.get("apps/v1", "StatefulSet"), inf.get("v1", "Pod"), inf.get("apps/v1", "ControllerRevision"), ctx.events.for_component("statefulset-controller"), clock=ctx.clock),
        resourcequota.ResourceQuotaController(ctx.client, inf.get("v1", "ResourceQuota"), clock=ctx.clock),
        podautoscaler.HorizontalPodAutoscalerController(
            ctx.client, inf.get("autoscaling/v2", "HorizontalPodAutoscaler"), inf.get("v1", "Pod"), ctx.metrics,
            ctx.events.for_component("horizontal-pod-autoscaler"), clock=ctx.clock),
    ]
    if ctx.sign_legacy_token is not None:
        controllers.append(tokens.TokensController(ctx.client, inf.get("v1", "ServiceAccount"), inf.get("v1", "Secret"),
                                                   ca_pem=ctx.ca_pem, sign=ctx.sign_legacy_token))
    return controllers, gc
