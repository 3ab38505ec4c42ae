"""notification_server: a recording org.freedesktop.Notifications server for tests/desktop.rs.

Usage: python3 -c SOURCE RECORD_FILE (on the bus in DBUS_SESSION_BUS_ADDRESS). Prints "ready" once
it owns the name, appends every Notify call to RECORD_FILE as one JSON line before replying, and
exits on SIGTERM, SIGINT or org.picosnitch.Test.Quit.
"""
import json
import os
import signal
import sys

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

NAME = "org.freedesktop.Notifications"
PATH = "/org/freedesktop/Notifications"


class Server(dbus.service.Object):
    def __init__(self, bus, record, loop):
        super().__init__(bus, PATH)
        self.bus = bus
        self.record = record
        self.loop = loop
        self.last_id = 0

    @dbus.service.method(NAME, in_signature="susssasa{sv}i", out_signature="u",
                         sender_keyword="sender")
    def Notify(self, app_name, replaces_id, app_icon, summary, body, actions, hints,
               expire_timeout, sender=None):
        self.last_id += 1
        entry = {
            "app_name": str(app_name),
            "replaces_id": int(replaces_id),
            "app_icon": str(app_icon),
            "summary": str(summary),
            "body": str(body),
            "actions": [str(a) for a in actions],
            "hints": {str(k): str(v) for k, v in hints.items()},
            "expire_timeout": int(expire_timeout),
            "sender_uid": int(self.bus.get_unix_user(sender)),
        }
        with open(self.record, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        return dbus.UInt32(self.last_id)

    @dbus.service.method(NAME, out_signature="as")
    def GetCapabilities(self):
        return ["body"]

    @dbus.service.method(NAME, out_signature="ssss")
    def GetServerInformation(self):
        return ("picosnitch-test", "picosnitch", "1", "1.2")

    @dbus.service.method(NAME, in_signature="u")
    def CloseNotification(self, notification_id):
        pass

    @dbus.service.method("org.picosnitch.Test")
    def Quit(self):
        self.loop.quit()


def main():
    DBusGMainLoop(set_as_default=True)
    loop = GLib.MainLoop()
    bus = dbus.SessionBus()
    name = dbus.service.BusName(NAME, bus, do_not_queue=True)  # noqa: F841 (held while running)
    Server(bus, sys.argv[1], loop)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("ready", flush=True)
    loop.run()
    # Leave without releasing the name: the bus may already be gone.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
