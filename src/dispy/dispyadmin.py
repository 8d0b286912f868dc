"""``dispyadmin`` (also ``dispyadmin.py``, ``python -m dispy.dispyadmin``): web pages to
watch every dispy node and control those whose --admin_secret it knows."""

from .web.admin_cli import main

if __name__ == "__main__":
    main()
