"""dispynetrelay: lets clients on other networks find the nodes on this one."""
