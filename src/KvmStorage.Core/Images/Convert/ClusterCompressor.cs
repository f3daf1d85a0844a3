using System.IO.Compression;

namespace KvmStorage.Core.Images.Convert;

/// <summary>Compresses one cluster (or grain) at a time; safe to call from several worker threads at once.</summary>
internal abstract class ClusterCompressor
{
    /// <summary>Room a payload may need beyond the input size (deflate stored blocks, zlib header and trailer).</summary>
    public static int Slack(int unit) => (unit / 64) + 64;

    /// <summary>
    /// Compresses <paramref name="input"/> into <paramref name="output"/>; returns the payload length, or -1 when it
    /// would not be smaller than <paramref name="limit"/> bytes (the caller then stores the cluster as it is).
    /// </summary>
    public abstract int Compress(ReadOnlySpan<byte> input, Span<byte> output, int limit);

    public static ClusterCompressor For(CompressionType type) => type switch
    {
        CompressionType.Zstd => new ZstdClusterCompressor(),
        _ => new DeflateClusterCompressor(zlibWrapped: false),
    };

    /// <summary>
    /// Deflate at zlib's default level 6, as qemu. qcow2 wants raw deflate (qcow2.rst); vmdk grains are zlib-wrapped.
    /// .NET's 32 KiB window is fine for qemu: it opens the stream with windowBits -12 but inflates a whole cluster in one
    /// inflate() call into the cluster's buffer (block/qcow2-threads.c), so back-references never reach outside it.
    /// </summary>
    internal sealed class DeflateClusterCompressor(bool zlibWrapped) : ClusterCompressor
    {
        [ThreadStatic]
        private static MemoryStream? scratch;

        public override int Compress(ReadOnlySpan<byte> input, Span<byte> output, int limit)
        {
            // Incompressible clusters are stored as they are: a fast pass finds them at a fraction of the cost of level 6.
            if (limit != int.MaxValue && Deflate(input, CompressionLevel.Fastest) >= limit)
            {
                return -1;
            }

            int length = Deflate(input, CompressionLevel.Optimal);
            if (length >= limit || length > output.Length)
            {
                return -1;
            }

            scratch!.GetBuffer().AsSpan(0, length).CopyTo(output);
            return length;
        }

        private int Deflate(ReadOnlySpan<byte> input, CompressionLevel level)
        {
            MemoryStream ms = scratch ??= new MemoryStream(input.Length + Slack(input.Length));
            ms.SetLength(0);
            using (Stream z = zlibWrapped
                ? new ZLibStream(ms, level, leaveOpen: true)
                : new DeflateStream(ms, level, leaveOpen: true))
            {
                z.Write(input);
            }

            return (int)ms.Length;
        }
    }

    /// <summary>One complete zstd frame per cluster, as qemu writes (compression type 1).</summary>
    internal sealed class ZstdClusterCompressor : ClusterCompressor
    {
        private const int Level = 3;

        [ThreadStatic]
        private static ZstdSharp.Compressor? compressor;

        public override int Compress(ReadOnlySpan<byte> input, Span<byte> output, int limit)
        {
            ZstdSharp.Compressor z = compressor ??= new ZstdSharp.Compressor(Level);
            Span<byte> target = output.Length > limit ? output[..limit] : output;
            return z.TryWrap(input, target, out int written) && written < limit ? written : -1;
        }
    }
}
