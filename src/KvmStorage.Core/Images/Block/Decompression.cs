using System.IO.Compression;
using KvmStorage.Core.Errors;
using ZstdSharp;

namespace KvmStorage.Core.Images.Block;

/// <summary>Decompresses one cluster or grain; the output buffer bounds the work, whatever the input claims.</summary>
internal static class Decompression
{
    public enum Method
    {
        /// <summary>Raw deflate (qcow2 zlib: windowBits -12).</summary>
        Deflate,

        /// <summary>zlib stream with header (vmdk grains).</summary>
        Zlib,

        /// <summary>zstd frames (qcow2 compression_type=zstd).</summary>
        Zstd,
    }

    /// <summary>How qcow2 clusters of <paramref name="type"/> are stored (qcow2.rst "Compressed Clusters Descriptor").</summary>
    public static Method For(CompressionType type) => type == CompressionType.Zstd ? Method.Zstd : Method.Deflate;

    /// <summary>
    /// Decodes <paramref name="input"/> until <paramref name="output"/> is full and returns the bytes produced.
    /// Decoding stops as soon as the output is full: the input may carry trailing sector padding.
    /// </summary>
    public static int Decompress(Method method, byte[] input, int inputLength, Span<byte> output, string path)
    {
        try
        {
            using var source = new MemoryStream(input, 0, inputLength, writable: false);
            using Stream decoder = method switch
            {
                Method.Deflate => new DeflateStream(source, CompressionMode.Decompress),
                Method.Zlib => new ZLibStream(source, CompressionMode.Decompress),
                _ => new DecompressionStream(source),
            };
            int done = 0;
            while (done < output.Length)
            {
                int n = decoder.Read(output[done..]);
                if (n == 0)
                {
                    break;
                }

                done += n;
            }

            return done;
        }
        catch (Exception e) when (e is InvalidDataException or ZstdException or IOException or InvalidOperationException or ArgumentException)
        {
            throw BlockErrors.Invalid(BlockErrorIds.InvalidCompressedData, path, $"compressed data is corrupt ({e.Message}).", e);
        }
    }

    public static KvmStorageException Short(string path, ulong hostOffset, int produced, int expected) =>
        BlockErrors.Invalid(BlockErrorIds.InvalidCompressedData, path, $"the compressed cluster at 0x{hostOffset:x} decompresses to {produced} bytes instead of {expected}.");
}
