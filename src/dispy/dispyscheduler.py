"""``python -m dispy.dispyscheduler``: share nodes between programs (see dispy.scheduler)."""

from .scheduler.main import main

if __name__ == "__main__":
    main()
