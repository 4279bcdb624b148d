"""A real headless ComfyUI server with this pack loaded, for the demo and the tests.

The server gets a base directory of its own (models, custom_nodes, input, output, user), with
the pack linked into its custom_nodes, so nothing is written into the ComfyUI tree.
"""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from comfy_env import comfyui_path

REPO = Path(__file__).resolve().parent.parent
PACK_NAME = "comfy-hspace"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pack_node_ids() -> list[str]:
    """Node ids this pack registers, read from the node sources (no ComfyUI import needed)."""
    return [i for f in sorted((REPO / "nodes").glob("*.py")) for i in re.findall(r'node_id="([^"]+)"', f.read_text())]


class ComfyServer:
    """``with ComfyServer(base) as server: server.run(workflow)``."""

    def __init__(self, base: Path, timeout: float = 120.0):
        self.base = Path(base)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        self.log_path = self.base / "server.log"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "ComfyServer":
        for d in ("models", "custom_nodes", "input", "output", "user", "temp"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        link = self.base / "custom_nodes" / PACK_NAME
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        comfy = comfyui_path()
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
               "--disable-auto-launch"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(cmd, cwd=comfy, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        try:
            self._wait_for_nodes()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _wait_for_nodes(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                info = requests.get(self.url + "/object_info", timeout=10).json()
            except (requests.ConnectionError, requests.Timeout, ValueError):
                time.sleep(0.5)
                continue
            missing = [n for n in pack_node_ids() if n not in info]
            if missing:
                raise RuntimeError(f"The server does not list the pack's nodes {missing}; "
                                   f"its log:\n{self.log()[-6000:]}")
            self.object_info = info
            return
        raise RuntimeError(f"ComfyUI did not answer within {self.timeout:.0f} s; its log:\n{self.log()[-4000:]}")

    def run(self, prompt: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:
        """Queues an API-format workflow, waits for it, returns its history entry; raises with
        the server's error message when it fails."""
        client_id = uuid.uuid4().hex
        r = requests.post(self.url + "/prompt", json={"prompt": prompt, "client_id": client_id}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"/prompt refused the workflow ({r.status_code}): {r.text[:4000]}")
        if r.json().get("node_errors"):  # ComfyUI runs the valid outputs and drops the others
            raise RuntimeError(f"/prompt dropped outputs: {json.dumps(r.json()['node_errors'])[:4000]}")
        prompt_id = r.json()["prompt_id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = requests.get(f"{self.url}/history/{prompt_id}", timeout=30).json()
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                status = entry["status"]
                if status.get("status_str") != "success":
                    errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                    raise RuntimeError(f"workflow failed: {json.dumps(errors)[:4000]}")
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited while running the workflow:\n{self.log()[-4000:]}")
            time.sleep(0.25)
        raise TimeoutError(f"workflow {prompt_id} did not finish within {timeout:.0f} s")

    def output_files(self, entry: dict[str, Any]) -> list[Path]:
        files = []
        for node_output in entry.get("outputs", {}).values():
            for image in node_output.get("images", []):
                files.append(self.base / "output" / image.get("subfolder", "") / image["filename"])
        return files
