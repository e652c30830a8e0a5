rule tfrecord:
    """One slide's tile folder -> <tfrecords>/<label>/<slide>.tfrecords (written atomically)."""
    input:
        tiles=slide_tiles_dir,
    output:
        tfrecord="{tfrecord_dir}/{slide}.tfrecords",
    log:
        "logs/tfrecord/{tfrecord_dir}/{slide}.log",
    benchmark:
        "results/benchmarks/tfrecord/{tfrecord_dir}/{slide}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        tiles_dir=slide_tiles_dir,
        coord_pattern=config["coord_pattern"],
        on_bad_input=config["on_bad_input"],
    script:
        "../../scripts/write_tfrecord.py"


rule tfrecord_index:
    """<slide>.index.npz beside the TFRecord, every CRC checked, readable by Slideflow."""
    input:
        tfrecord="{tfrecord_dir}/{slide}.tfrecords",
    output:
        index="{tfrecord_dir}/{slide}.index.npz",
    log:
        "logs/tfrecord_index/{tfrecord_dir}/{slide}.log",
    benchmark:
        "results/benchmarks/tfrecord_index/{tfrecord_dir}/{slide}.tsv"
    conda:
        "../../environment.yml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "../../scripts/index_tfrecord.py"
