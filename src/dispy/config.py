"""Ports, limits and defaults shared by every dispy component.

The numbers follow the spec documents (ports 51347..51349); ``DispyPort`` is the
4.15 name of the base port (client = base, node = base + 1, scheduler = base + 2).
"""

ClientPort = 51347
NodePort = 51348
SharedSchedulerPort = 51349
DispyPort = ClientPort
HTTPServerPort = 8181

#: Seconds a single network operation may take before the peer is presumed gone.
MsgTimeout = 10
#: Largest file a node accepts, in bytes; 0 means no limit.
MaxFileSize = 0
#: Largest frame accepted from an authenticated peer (arguments, results, file chunks).
MaxFrameSize = 1 << 31
#: Size of the chunks files are streamed in.
FileChunkSize = 1 << 20

IPv4MulticastGroup = "239.255.61.59"
IPv6MulticastGroup = "ff05::b409:3171:9705:5134:6159"
Java = "/usr/bin/java"

#: Seconds between the client's "why are my jobs waiting" reports while no node is usable.
StallReportInterval = 10.0
#: Seconds after a cluster is created before the first such report (a node on the LAN
#: answers within a second; a user should not wait long to learn that none did).
FirstStallReport = 2.5

#: Seconds submit_node, send_file, set_node_cpus (and the other node methods) wait for a
#: node the cluster is still connecting to or setting up, before they give up.
NodeSetupWait = 30.0

#: Version of the wire protocol; every handshake and datagram carries it.
PROTOCOL_VERSION = 2
