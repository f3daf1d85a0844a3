using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Convert;

namespace KvmStorage.Infrastructure;

/// <summary>Turns the conversion parameters the Volume cmdlets share into the core's options.</summary>
internal static class ConvertParameters
{
    /// <summary>The output formats the converter writes, as -Format accepts them.</summary>
    public static readonly string[] Formats = ["raw", "qcow2", "vmdk", "vhdx", "vpc", "vdi"];

    public static ImageFormat ParseFormat(string? format, ImageFormat fallback) =>
        format is not null && ImageFormats.TryParse(format, out ImageFormat parsed) ? parsed : fallback;

    /// <summary>A -Format argument as the core takes it: null when not given.</summary>
    public static ImageFormat? ParseFormat(string? format) =>
        format is not null && ImageFormats.TryParse(format, out ImageFormat parsed) ? parsed : null;

    public static ConvertOptions Build(ImageFormat format, bool compress, string? compressionType, Preallocation preallocation, ulong? clusterSize, string? compat, UnixFileMode mode) => new()
    {
        Format = format,
        Compress = compress,
        CompressionType = string.Equals(compressionType, "zstd", StringComparison.OrdinalIgnoreCase) ? CompressionType.Zstd : CompressionType.Zlib,
        Preallocation = preallocation,
        ClusterSize = clusterSize is { } cs ? (uint)Math.Min(cs, uint.MaxValue) : null,
        Compat = compat ?? "1.1",
        Mode = mode,
    };
}
