# Set-up and everyday commands. `make quickstart` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install quickstart photos test test-fast bench clean constraints docs

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,docs]'
	touch $(STAMP)

install: $(STAMP)

# The supervised positive/null controls, an SSL (SimCLR) pair beside them, then the VLM
# (CLIP-style) study: ~9 min on 2 cores.
quickstart: install
	$(BIN)/dejavu run configs/quickstart.yaml
	$(BIN)/dejavu run configs/demo-ssl.yaml
	$(BIN)/dejavu run configs/quickstart-vlm.yaml

# The photograph example: scenes on real photographs (scikit-image's samples), JPEG at mixed
# sizes and aspect ratios, as a COCO dataset; then an SSL and a VLM study over it (~5 min).
PHOTOS := runs/photo-coco
photos: install
	$(BIN)/dejavu data synth --format coco --num 2000 --output $(PHOTOS) --overwrite \
	  --set data.background=photo --set "data.size_range=[0.5, 2.0]" --set data.image_size=48 \
	  --set data.num_classes=5 --set "data.objects_per_image=[1, 3]" --set "data.object_scale=[0.3, 0.4]" \
	  --set data.cooccurrence=0.3 --set data.shard_size=250
	$(BIN)/dejavu run configs/photos.yaml
	$(BIN)/dejavu run configs/photos-vlm.yaml

# Every tier (unit, ray, e2e, cluster; tests/conftest.py), with the 25 slowest tests listed.
test: install
	$(BIN)/python -m pytest -q --durations=25

# The unit tier alone: no Ray, within 3 minutes.
test-fast: install
	$(BIN)/python -m pytest -q -m unit --durations=10

bench: install
	$(BIN)/python benchmarks/stage_times.py
	$(BIN)/python benchmarks/knn_bench.py
	$(BIN)/python benchmarks/clip_bench.py

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on any warning: a broken
# link, a page missing from the nav.
docs: install
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf runs .pytest_cache

# After an upgrade the whole suite passed on: record the tested set.
constraints: install
	{ sed -n '1,3p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^dejavu-study'; } > constraints.tmp
	mv constraints.tmp constraints.txt
