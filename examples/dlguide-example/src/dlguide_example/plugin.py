"""Registration only: this module is imported by ``dlguide list``, so it imports no torch."""

from dlguide import hookimpl


@hookimpl
def dlguide_register(registry):
    registry.add_task(
        "example.sine",
        "dlguide_example.sine:SineRegression",
        "fit a noisy sine wave with a small MLP (the plugin-writing example)",
        demo={"epochs": 5},
    )
