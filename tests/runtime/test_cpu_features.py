"""CPU flags → the INT8 recipe class and BF16 support, from /proc/cpuinfo text."""

from compress.runtime.cpu_features import cpu_flags, describe, has_bf16, has_vnni, int8_isa

ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16\n"
HASWELL = "processor\t: 0\nflags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu sse avx avx2 fma\n"
ALDER = "flags\t\t: avx2 avx_vnni\n"
SKYLAKE_SP = "flags\t\t: avx2 avx512f avx512bw\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes asimddp\n"


def test_flags_and_recipe_class():
    assert cpu_flags(HASWELL) == {"fpu", "sse", "avx", "avx2", "fma"}
    assert int8_isa(cpu_flags(ZEN4), "x86_64") == "vnni"
    assert int8_isa(cpu_flags(ALDER), "x86_64") == "vnni"  # AVX-VNNI without AVX-512
    assert int8_isa(cpu_flags(HASWELL), "x86_64") == "avx2"
    assert int8_isa(cpu_flags(SKYLAKE_SP), "x86_64") == "avx2"  # AVX-512 without VNNI saturates too
    assert int8_isa(cpu_flags(GRAVITON), "aarch64") == "arm64"
    assert cpu_flags("no flags here") == set()


def test_bf16_and_description():
    assert has_bf16(cpu_flags(ZEN4)) and not has_bf16(cpu_flags(ALDER))
    assert has_vnni(cpu_flags(ZEN4)) and not has_vnni(cpu_flags(HASWELL))
    d = describe(cpu_flags(ZEN4))
    assert d["vnni"] and d["bf16"] and "avx512_vnni" in d["flags"] and "fpu" not in d["flags"]


def test_nchwc_block_follows_the_vector_width():
    from compress.runtime.cpu_features import nchwc_block

    assert nchwc_block(cpu_flags(ZEN4), "x86_64") == 16
    assert nchwc_block(cpu_flags(SKYLAKE_SP), "x86_64") == 16
    assert nchwc_block(cpu_flags(HASWELL), "x86_64") == 8
    assert nchwc_block(cpu_flags(ALDER), "x86_64") == 8
    assert nchwc_block({"sse4_2"}, "x86_64") == 1
    assert nchwc_block(cpu_flags(GRAVITON), "aarch64") == 1


def test_only_8_bit_weight_files_on_an_x86_cpu_without_vnni_saturate():
    from compress.runtime.cpu_features import saturates

    assert saturates("vnni", "avx2") and saturates("arm64", "avx2")
    assert not saturates("avx2", "avx2") and not saturates("avx2", "vnni")  # 7-bit weights: right everywhere
    assert not saturates("vnni", "vnni") and not saturates("vnni", "arm64") and not saturates(None, "avx2")
