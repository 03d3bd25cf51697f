"""Code the tests import, as opposed to tests and fixtures: helpers shared by more than one test module.

Fixtures live in the ``conftest.py`` files (``tests/conftest.py`` for the whole suite, one per package
folder for what only that folder's tests use); plain functions and classes a test imports live here:

- ``asof_reference``: the as-of features recomputed from the raw lake, independently of dbt and serving.
- ``browser``: headless Chromium over DevTools, for pages behind a login.
- ``declarations``: a source declaration written to a sources folder and loaded, for the ingestion tests.
- ``fingerprints``: the checksums the tests compare marts and lake tables by.
- ``hostile``: artifacts an attacker could register or send (a pickle that runs a command).
- ``predict``: a ``/predict`` body from a row of the marts.
- ``source_csv``: the shipped flights CSV, read independently of the lake.
- ``stand_in_api``: ``lab serve`` with a stand-in model and features (also run as a script).

Import them by their full name (``from tests.helpers.fingerprints import fingerprint``): ``tests`` is a
package, so pytest puts the project's root on ``sys.path`` (as the editable install does too).
"""
