"""Only the modules that read or write TFRecords load TensorFlow; the model package and the readers never do."""

from __future__ import annotations

import subprocess
import sys


def test_esm_jax_the_readers_and_the_pipeline_modules_import_without_tensorflow():
    code = (
        "import sys, esm_jax, data_pipeline.layout, data_pipeline.input.input_pipeline, data_pipeline.build.cli\n"
        "from data_pipeline.readers import alignments, dms, labeled_fasta, netsurfp, scope, structure\n"
        "print('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "False"
