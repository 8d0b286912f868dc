"""``python -m dispy.dispynetrelay``: relay discovery to nodes on this network (see
dispy.relay)."""

from .relay.main import main

if __name__ == "__main__":
    main()
