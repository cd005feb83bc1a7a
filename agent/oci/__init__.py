"""Pure OCI and Docker formats, shared by the agent and the controller.

Image references, manifests and indexes, platforms, the Dockerfile parser (with its word expansion and
instruction types), .dockerignore rules, and atomic file writes. These modules do no I/O beyond the
atomic file writes of `files.py`, import no grpc and no other agent area: they only use the standard
library, `agent.errors` (re-exported as `agent.oci.errors`) and `agent.limits` (pure tables). That is
why the controller may import them: `agent.oci.*` (and the generated API stubs) is all it imports
from the agent package.
"""
