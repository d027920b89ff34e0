"""The HTTP resources, one per API area.

The event-loop rule: a responder never calls blocking I/O. It awaits the registry,
whose stores (oci_ref.storage) do their database, file and hashing work off the
event loop; anything else slow (reading a file once) goes through a thread.
"""
