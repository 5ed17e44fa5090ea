"""scripts/preflight.sh, the check tools.sh runs before it installs anything:
on a machine without apt-get that lacks Java and Chromium, it names exactly
those two, with how to get them, installs nothing and fails; on this machine,
where everything is in place, it prints nothing and goes on."""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "interop"))
from checks import check, finish  # noqa: E402

root = pathlib.Path(__file__).resolve().parents[2]
script = root / "scripts" / "preflight.sh"

here = subprocess.run(["bash", str(script)], capture_output=True, text=True)
check("everything in place: nothing printed, exit 0", here.returncode == 0 and here.stdout + here.stderr == "",
      here.stdout + here.stderr)

# A machine like this one, but with no apt-get, no java and no Chromium: a
# PATH of links to every other program the script uses.
with tempfile.TemporaryDirectory() as bin_dir:
    for program in ["bash", "cargo", "rustup", "cc", "python3", "node", "npm", "sort", "head", "printf", "id",
                    "grep", "tr", "fc-list"]:
        found = shutil.which(program)
        if found:
            os.symlink(found, os.path.join(bin_dir, program))
    env = {"PATH": bin_dir, "HOME": os.environ.get("HOME", "/tmp"), "CHROMIUM_PATH": "/nonexistent/chromium"}
    bare = subprocess.run([os.path.join(bin_dir, "bash"), str(script)], capture_output=True, text=True, env=env)
    told = bare.stderr
    check("lacking Java and Chromium without apt: exit 1", bare.returncode == 1, told)
    check("names Java 17 with its packages", "Java 17" in told and "openjdk-17-jre-headless" in told
          and "brew install openjdk@17" in told, told)
    check("names Chromium and CHROMIUM_PATH", "Chromium" in told and "CHROMIUM_PATH" in told, told)
    check("names nothing that is there", all(w not in told for w in ["Rust", "Python", "Node.js", "C compiler"]), told)
    check("installs nothing", "installing" not in told, told)

finish()
