"""A ``ShardIndex`` still alive at interpreter exit goes quietly (its ``__del__`` must not use torn-down globals)."""

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = """
import sys
import cliplab.data.shards as shards

index = shards.ShardIndex.build(sys.argv[1])
assert index.read(0)["txt"] == b"hi"  # a descriptor is open in this process
shards.kept_until_exit = index  # freed when the module's globals are cleared, after its `os`
"""


def test_a_shard_index_alive_at_exit_writes_nothing_to_stderr(tmp_path):
    shard = tmp_path / "0.tar"
    with tarfile.open(shard, "w") as tf:
        for name, data in (("a.txt", b"hi"), ("a.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(shard)], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
