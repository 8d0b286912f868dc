"""``python -m dispy.dispynode``: run a dispynode server (see dispy.node)."""

from .node.main import main

if __name__ == "__main__":
    main()
