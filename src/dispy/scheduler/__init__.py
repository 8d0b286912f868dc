"""dispyscheduler: share dispynode servers between several client programs."""
