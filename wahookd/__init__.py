"""wahookd: durable, signed webhook delivery for a WhatsApp HTTP API gateway."""

__version__ = "0.1.0"
