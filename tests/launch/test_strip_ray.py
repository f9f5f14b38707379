"""The stripped Ray wheel: dropped folders gone, binaries still executable, RECORD matching."""
import stat
import zipfile

from launch.tools.strip_ray import main, strip_wheel


def _wheel(path):
    files = {"ray/__init__.py": b"x = 1\n", "ray/jars/ray.jar": b"j" * 1000, "ray/rllib/a.py": b"r\n",
             "ray/dashboard/agent.py": b"a\n", "ray/core/src/ray/raylet/raylet": b"\x7fELF" + b"0" * 100,
             "ray-9.dist-info/METADATA": b"Name: ray\n"}
    record = "".join(f"{n},sha256=x,{len(d)}\n" for n, d in files.items()) + "ray-9.dist-info/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (0o100755 if name.endswith("raylet") else 0o100644) << 16
            z.writestr(info, data)
        z.writestr("ray-9.dist-info/RECORD", record)
    return path


def test_strip_drops_the_libraries_keeps_the_core_and_its_permissions(tmp_path):
    src = _wheel(tmp_path / "ray-9-cp312-cp312-manylinux2014_x86_64.whl")
    got = strip_wheel(src, tmp_path / "out")
    assert got["kept"] == 5 and got["dropped"] == 2 and got["bytes"] < got["source_bytes"]
    with zipfile.ZipFile(tmp_path / "out" / src.name) as z:
        names = set(z.namelist())
        assert names == {"ray/__init__.py", "ray/dashboard/agent.py", "ray/core/src/ray/raylet/raylet",
                         "ray-9.dist-info/METADATA", "ray-9.dist-info/RECORD"}
        assert stat.S_IMODE(z.getinfo("ray/core/src/ray/raylet/raylet").external_attr >> 16) == 0o755
        record = [ln.split(",")[0] for ln in z.read("ray-9.dist-info/RECORD").decode().splitlines()]
        assert set(record) == names
        assert z.read("ray/__init__.py") == b"x = 1\n"


def test_strip_refuses_to_overwrite_its_source(tmp_path):
    import pytest

    src = _wheel(tmp_path / "ray-9-cp312-cp312-manylinux2014_x86_64.whl")
    with pytest.raises(SystemExit):
        main([str(src), str(tmp_path)])
