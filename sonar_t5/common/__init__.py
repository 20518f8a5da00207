"""Small helpers shared by every script: user-facing errors, atomic files, devices."""
