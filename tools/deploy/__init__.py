"""Deployment: the container image's requirements, the Envoy config for compose and Kubernetes, and the
generator of ``deploy/`` (``python -m tools.deploy``)."""
