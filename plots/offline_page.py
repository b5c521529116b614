"""Write plots/offline_page.html: DVC's plots page with vega, vega-lite and vega-embed inlined, so that
`dvc plots show` (.dvc/config: plots.html_template) draws every plot with no network, on a host or in the image.

DVC's own page loads the three scripts from a CDN; these are the same releases (the ones dvc-render 1.0.2 asks
for), taken from the npm registry and pinned twice: the npm tarball by its sha512 integrity, the inlined file by
its sha256 (tests/test_offline_plots.py checks the page against SCRIPTS without any network).
Run: python plots/offline_page.py   (needs npm and the npm registry; writes the page only if every hash matches)
"""
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PAGE = Path(__file__).with_name("offline_page.html")

# (npm package@version, file in the tarball, npm integrity of the tarball, sha256 of that file)
SCRIPTS = [
    ("vega@5.20.2", "package/build/vega.min.js",
     "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
     "4794d0169cb1f3ebad8117fe98ba5bd652dd725905ec0384e832391dbccb03be"),
    ("vega-lite@5.2.0", "package/build/vega-lite.min.js",
     "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
     "d73157451b3978015ab31dacd55ff90d986ab8663fc0abed50f97b3cd90002cb"),
    ("vega-embed@6.18.2", "package/build/vega-embed.min.js",
     "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
     "1ba9826431ddc9805e815ad92acc811c819f2bfd32bda2a128b8c4b5070fab5e"),
]

# DVC's page (dvc_render.html.PAGE_HTML) without its {scripts} placeholder, where DVC would add the CDN tags.
# {refresh_tag} and {plot_divs} stay for DVC to fill; SCRIPT_TAGS is ours.
TEMPLATE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <title>DVC Plot</title>
SCRIPT_TAGS
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def script_tag(package: str, member: str, sha256: str, code: str) -> str:
    """The marker comment names the file and its hash; tests/test_offline_plots.py finds the scripts by it."""
    return f"<!-- {package} {member} sha256:{sha256} -->\n<script>\n{code}\n</script>"


def fetch(package: str, member: str, integrity: str, sha256: str, workdir: Path) -> str:
    out = subprocess.run(["npm", "pack", package, "--json", "--pack-destination", str(workdir)],
                         capture_output=True, text=True, check=True).stdout
    tarball = workdir / json.loads(out)[0]["filename"]
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if digest != integrity:
        sys.exit(f"{package}: the npm tarball's integrity is {digest}, pinned {integrity}")
    with tarfile.open(tarball) as tar, tar.extractfile(member) as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        sys.exit(f"{package}: {member} has sha256 {hashlib.sha256(data).hexdigest()}, pinned {sha256}")
    code = data.decode("utf-8")
    if "</script" in code.lower():
        sys.exit(f"{package}: {member} contains '</script' and cannot be inlined")
    return script_tag(package, member, sha256, code)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tags = [fetch(*pin, Path(tmp)) for pin in SCRIPTS]
    PAGE.write_text(TEMPLATE.replace("SCRIPT_TAGS", "\n".join(tags)), encoding="utf-8")
    print(f"wrote {PAGE} ({PAGE.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
