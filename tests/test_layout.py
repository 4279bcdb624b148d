"""Where ComfyUI may be imported: only in comfy_hspace/host/ (and the nodes). The algorithm
modules are torch functions that know nothing of ComfyUI."""
import ast
import subprocess
import sys

from comfy_env import REPO

COMFY_MODULES = ("comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "server", "execution")
# host modules that talk to ComfyUI directly; host/patch.py only speaks its patch protocol
IMPORT_COMFYUI = {"host/autograd.py": False, "host/discovery.py": True, "host/edited_sampling.py": True,
                  "host/embedded.py": False, "host/latents.py": True, "host/memory.py": True,
                  "host/model_info.py": False,
                  "host/patch.py": False, "host/pixel_ddpm.py": True, "host/pixel_dit.py": True,
                  "host/recording.py": True,
                  "host/trajectory.py": True, "host/architectures.py": False, "host/__init__.py": False,
                  "host/report.py": True}


def imports_comfyui(path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        if any(n.split(".")[0] in COMFY_MODULES for n in names):
            return True
    return False


def test_only_the_host_package_imports_comfyui():
    package = REPO / "comfy_hspace"
    found = {str(p.relative_to(package)): imports_comfyui(p) for p in sorted(package.rglob("*.py"))}
    outside = [name for name, uses in found.items() if uses and not name.startswith("host/")]
    assert outside == [], f"algorithm modules importing ComfyUI: {outside}"
    assert {k: v for k, v in found.items() if k.startswith("host/")} == IMPORT_COMFYUI


def test_algorithm_modules_import_without_comfyui():
    """In a fresh interpreter without ComfyUI on the path every algorithm module imports, and no
    ComfyUI module gets loaded on the way."""
    modules = sorted(p.stem for p in (REPO / "comfy_hspace").glob("*.py") if p.stem != "__init__")
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module('comfy_hspace.' + m)\n"
            f"loaded = [m for m in sys.modules if m.split('.')[0] in {COMFY_MODULES!r}]\n"
            "assert not loaded, loaded\nprint(len(sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(modules) >= 12


def test_requirements_list_what_the_nodes_import():
    """requirements.txt (what a user's ComfyUI gets) holds exactly the third-party packages that
    the library and the nodes import, besides what ComfyUI itself brings."""
    from_comfyui = {"torch", "PIL", "comfy", "comfy_api", "comfy_extras", "folder_paths", "server", "nodes"}
    stdlib = set(sys.stdlib_module_names)
    imported = set()
    for path in [*(REPO / "comfy_hspace").rglob("*.py"), *(REPO / "nodes").glob("*.py"), REPO / "__init__.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    third_party = imported - stdlib - from_comfyui - {"comfy_hspace"}
    listed = {line.split(">")[0].split("=")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    assert third_party == listed


def test_the_library_never_imports_its_comfyui_side():
    """comfy_hspace/ outside host/ imports nothing of host/ (issue 30): the torch-only library stays usable, and
    readable, without the modules that talk to ComfyUI."""
    reaching = []
    for path in sorted((REPO / "comfy_hspace").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if (node.level == 1 and module.split(".")[0] == "host") or module.startswith("comfy_hspace.host") or \
                        (node.level == 1 and not module and any(a.name == "host" for a in node.names)):
                    reaching.append(f"{path.name}: from {'.' * node.level}{module} import …")
            elif isinstance(node, ast.Import) and any(a.name.startswith("comfy_hspace.host") for a in node.names):
                reaching.append(f"{path.name}: import comfy_hspace.host…")
    assert reaching == []


def test_only_the_registry_asks_unet_or_transformer():
    """Whether a model is a UNet or a transformer is answered in one place (issue 30): no `if` outside
    host/architectures.py tests for a row's kind, a diffusion model's class, or a missing site."""
    asking = ("is_transformer", "DiffusersUNet", "UNetModel", "family_of", "site_of", "middle_block", "reach")
    found = []
    for path in sorted([*(REPO / "comfy_hspace").rglob("*.py"), *(REPO / "nodes").glob("*.py")]):
        if path.name == "architectures.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.If, ast.IfExp, ast.comprehension)):
                tests = node.ifs if isinstance(node, ast.comprehension) else [node.test]
                found += [f"{path.name}: {ast.unparse(t)}" for t in tests if any(w in ast.unparse(t) for w in asking)]
    assert found == []


def test_no_library_or_node_function_is_over_60_lines():
    """Issue 30: every function of the library and the nodes fits in 60 lines, schema declarations apart."""
    long = []
    for path in sorted([*(REPO / "comfy_hspace").rglob("*.py"), *(REPO / "nodes").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name != "define_schema":
                if node.end_lineno - node.lineno + 1 > 60:
                    long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []
