"""Web pages of dispy: the httpd monitor of one program and dispyadmin for all nodes."""
