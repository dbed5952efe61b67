"""The OPC UA server (asyncua): the park's address space, prepaid methods, alarm conditions,
history and security. It runs in a process of its own (``server.opcua_worker``)."""
