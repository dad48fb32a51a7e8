"""Message endpoints for inbound traffic: signature checks, payload shapes and the HTTP receivers."""
