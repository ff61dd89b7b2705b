"""Every Python snippet of python/README.md runs, against the real daemon."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import PYDIR

with open(os.path.join(PYDIR, "README.md")) as f:
    SNIPPETS = re.findall(r"```python\n(.*?)```", f.read(), re.S)


@pytest.mark.parametrize("code", SNIPPETS, ids=["snippet%d" % i for i in range(len(SNIPPETS))])
def test_readme_snippet(sock_path, code):
    env = dict(os.environ, SOCKFACTORY_SOCKET=sock_path, PYTHONPATH=PYDIR)
    r = subprocess.run(
        [sys.executable, "-X", "dev", "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=60,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr.decode()
    assert b"ResourceWarning" not in r.stderr, r.stderr.decode()
