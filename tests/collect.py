"""A sink that keeps what the listen pipeline emits, in order, for tests to inspect."""

from edge.outputs.sinks import Sink


class Collect(Sink):
    def __init__(self):
        super().__init__()
        self.records = []  # (kind, record): kind is window | start | end | status

    def window(self, result):
        self.records.append(("window", result))

    def event(self, event):
        self.records.append((event.kind, event))

    def status(self, status):
        self.records.append(("status", status))

    def of(self, *kinds):
        return [record for kind, record in self.records if kind in kinds]

    @property
    def windows(self):
        return self.of("window")

    @property
    def events(self):
        return self.of("start", "end")

    @property
    def statuses(self):
        return self.of("status")
