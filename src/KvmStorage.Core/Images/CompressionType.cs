namespace KvmStorage.Core.Images;

/// <summary>The codec of compressed qcow2 clusters (qcow2 header byte 104).</summary>
public enum CompressionType
{
    /// <summary>Raw deflate, qemu's "zlib" (compression type 0, readable by every qemu).</summary>
    Zlib,

    /// <summary>zstd frames (compression type 1; needs qemu 5.1 or later).</summary>
    Zstd,
}
