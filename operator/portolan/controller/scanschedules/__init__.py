"""The ScanSchedule controller: cron grammar, run decisions and drift (:mod:`.scheduling`)."""
