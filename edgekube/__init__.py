"""edgekube: a single-binary, embedded, Kubernetes-compatible orchestrator for edge devices."""

__version__ = "0.1.0"
# The Kubernetes API version this server speaks (what /version reports as gitVersion's base).
KUBE_VERSION = "v1.31.0"
