"""The guide's curl examples, run as written against the real daemon (a subprocess).

Only the host, the token, the session id and the receiver URL are replaced.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import trustme
from daemon_proc import DaemonProcess, cli, free_port
from delivery.test_signing import verify_webhook_signature
from support import Receiver, ca_file

GUIDE = Path(__file__).parent / "data" / "webhooks-guide.md"
SHARED_GUIDE = Path(__file__).parents[2] / "shared" / "seed" / "webhooks-guide.md"
SESSION = "5bc99cea8975b95fe7077c64a3312145"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def guide_blocks(lang: str) -> list[str]:
    """Fenced code blocks of one language, in the guide's order."""
    return re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.S)


def test_bundled_guide_is_the_shared_one() -> None:
    if not SHARED_GUIDE.exists():
        pytest.skip("shared/ is not beside this checkout")
    assert GUIDE.read_text() == SHARED_GUIDE.read_text()


async def run(cmd: list[str], cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, (cmd, err.decode())
    return out.decode()


def shape(value: object) -> object:
    """The JSON shape: keys and value types, not the values."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


async def test_guide_curl_examples_work_as_written(
    tmp_path: Path, ca: trustme.CA, receiver: Receiver
) -> None:
    port = free_port()
    config = tmp_path / "wahookd.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:{port}"\n'
        f'[storage]\npath = "{tmp_path / "data" / "wahookd.db"}"\n'
        f'[delivery]\nca_file = "{ca_file(ca, tmp_path)}"\n'
        # the receiver listens on loopback, which the network policy refuses by default
        'allow_networks = ["127.0.0.0/8"]\n'
    )
    daemon = DaemonProcess(config, port, tmp_path)
    await daemon.start()
    try:
        token = (await run(cli("token", "-c", str(config)), tmp_path)).strip()
        assert token.count(".") == 2

        def adapt(block: str) -> str:
            return (
                block.replace("https://api.yourwhatsappapi.com", daemon.base)
                .replace("YOUR_JWT_TOKEN", token)
                .replace("YOUR_SESSION_ID", SESSION)
                .replace("https://your-server.com/webhook", receiver.url)
                .replace("https://webhook.site/your-unique-url", receiver.url)
            )

        curls = [b for b in guide_blocks("bash") if b.lstrip().startswith("curl")]
        responses = [json.loads(b) for b in guide_blocks("json") if '"success"' in b]
        expected = {
            "PUT": responses[0],  # configure webhook
            "queue": responses[1],
            "stats": responses[2],
        }
        answers = {}
        for block in curls:
            command = adapt(block).replace("curl", "curl --silent --show-error --fail-with-body", 1)
            out = await run(["bash", "-c", command], tmp_path)
            answer = json.loads(out)
            assert answer["success"] is True, (block, answer)
            first = shlex.split(block.replace("\\\n", " "))
            method = first[first.index("-X") + 1]
            answers.setdefault((method, first[first.index("-X") + 2].split("/api/")[1]), answer)

        put = answers[("PUT", "webhook/config/YOUR_SESSION_ID")]
        assert put["message"] == expected["PUT"]["message"]
        assert shape(put["config"]) == shape(expected["PUT"]["config"])
        queue = answers[("GET", "webhook/queue")]
        assert shape(queue) == shape(expected["queue"])
        stats = answers[("GET", "webhook/stats/YOUR_SESSION_ID")]
        assert set(stats["stats"]) == set(expected["stats"]["stats"])
        test = answers[("POST", "webhook/test")]
        assert test["statusCode"] == 200 and test["responseTime"].endswith("ms")
        # the test webhook reached the receiver with the guide's payload
        sent = [r for r in receiver.requests if r.headers.get("X-Webhook-Event") == "test"]
        assert json.loads(sent[0].body)["message"] == "This is a test webhook"

        # and a real event is delivered, signed as the guide verifies it
        await run(
            [
                "bash",
                "-c",
                adapt(
                    f"curl -X PUT https://api.yourwhatsappapi.com/api/webhook/config/{SESSION} "
                    "-H 'Authorization: Bearer YOUR_JWT_TOKEN' -H 'Content-Type: application/json' "
                    '-d \'{"url": "https://your-server.com/webhook", "events": ["*"], '
                    '"secret": "your_webhook_secret_key"}\' --silent --fail-with-body'
                ),
            ],
            tmp_path,
        )
        event = json.loads(guide_blocks("json")[0])  # message.received example
        seen = len(receiver.requests)
        out = await run(
            [
                "curl",
                "-X",
                "POST",
                f"{daemon.base}/api/events",
                "-H",
                f"Authorization: Bearer {token}",
                "-H",
                "Content-Type: application/json",
                "-d",
                json.dumps(event),
                "--silent",
            ],
            tmp_path,
        )
        assert json.loads(out)["queued"] == 1
        got = await receiver.wait_for(seen + 1)
        delivered = got[-1]
        assert json.loads(delivered.body) == event
        assert verify_webhook_signature(
            delivered.body, delivered.headers["X-Webhook-Signature"], "your_webhook_secret_key"
        )
    finally:
        assert await daemon.stop() == 0, daemon.log()
