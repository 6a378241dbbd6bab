#!/usr/bin/env bash
# Download the seed's Kaggle datasets into datasets/ (next to this script), in the
# layout zkynet.data's loaders read:
#
#   ./download_datasets.sh                 # all of them
#   ./download_datasets.sh mnist boston    # some of them
#
# Needs the Kaggle CLI (pip install kaggle) and an API token (~/.kaggle/kaggle.json,
# or KAGGLE_USERNAME and KAGGLE_KEY). Idempotent: a dataset already in place is
# skipped. Each one is downloaded and unpacked in a temporary folder and moved into
# place only when complete, so an interrupted run never leaves half a dataset.
# DATASETS_DIR overrides where they go.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
target="${DATASETS_DIR:-$root/datasets}"

# name | kind (dataset or competition) | Kaggle slug | a file that proves it is complete
catalog="
mnist|dataset|oddrationale/mnist-in-csv|mnist_train.csv
sign_mnist|dataset|datamunge/sign-language-mnist|sign_mnist_train.csv
boston|dataset|altavish/boston-housing-dataset|HousingData.csv
ravdess|dataset|uwrfkaggler/ravdess-emotional-speech-audio|Actor_24
feedback|competition|feedback-prize-2021|train.csv
"

fail() { echo "download_datasets.sh: error: $*" >&2; exit 1; }
names() { echo "$catalog" | awk -F'|' 'NF {print $1}' | tr '\n' ' '; }

wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || read -r -a wanted <<< "$(names)"
for name in "${wanted[@]}"; do
    echo "$catalog" | grep -q "^$name|" || fail "unknown dataset '$name'; choose from: $(names)"
done

command -v kaggle >/dev/null 2>&1 ||
    fail "the Kaggle CLI is not installed. Install it with:  pip install kaggle"
if [ -z "${KAGGLE_USERNAME:-}" ] || [ -z "${KAGGLE_KEY:-}" ]; then
    token="${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}/kaggle.json"
    [ -f "$token" ] || fail "no Kaggle API token. Create one at https://www.kaggle.com/settings (API ->
  Create New Token), save it as $token (chmod 600), or export KAGGLE_USERNAME and KAGGLE_KEY."
fi

mkdir -p "$target"
for name in "${wanted[@]}"; do
    IFS='|' read -r _ kind slug proof <<< "$(echo "$catalog" | grep "^$name|")"
    if [ -e "$target/$name/$proof" ]; then
        echo "$name: already in $target/$name, skipped"
        continue
    fi
    work="$(mktemp -d "$target/.$name.partial.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
    echo "$name: downloading $slug"
    if [ "$kind" = competition ]; then
        kaggle competitions download -c "$slug" -p "$work" ||
            fail "$name: download failed (for a competition, accept its rules on kaggle.com first)"
    else
        kaggle datasets download -d "$slug" -p "$work" || fail "$name: download failed"
    fi
    mkdir "$work/unpacked"
    for archive in "$work"/*.zip; do
        [ -e "$archive" ] || fail "$name: Kaggle delivered no .zip file"
        python3 -m zipfile -e "$archive" "$work/unpacked" || fail "$name: could not unpack $(basename "$archive")"
    done
    [ -e "$work/unpacked/$proof" ] || fail "$name: the download has no $proof; Kaggle's files may have changed"
    rm -rf "$target/$name"
    mv "$work/unpacked" "$target/$name"
    rm -rf "$work"
    trap - EXIT
    echo "$name: ready in $target/$name"
done
