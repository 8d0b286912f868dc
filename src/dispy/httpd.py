"""``dispy.httpd.DispyHTTPServer(cluster)``: watch and manage a program's clusters in a
web browser (see dispy.web.monitor)."""

from .web.monitor import DispyHTTPServer

__all__ = ["DispyHTTPServer"]
