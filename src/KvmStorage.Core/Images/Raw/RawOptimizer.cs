using KvmStorage.Core.Images.Block;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Raw;

/// <summary>Gives back the space of a raw file's zeros: holes punched in place, or a sparse copy.</summary>
internal static class RawOptimizer
{
    private const int HoleGranularity = 4096;
    private const int Chunk = 1024 * 1024;

    /// <summary>What is done with one chunk of the file's data, read at <paramref name="position"/>.</summary>
    private delegate void DataChunk(ulong position, Span<byte> data);

    /// <summary>Punches holes over every 4 KiB-aligned run of zeros in the file's data (holes stay holes).</summary>
    public static void PunchZeroRanges(SafeFileHandle handle, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ForEachDataChunk(handle, path, progress, (position, span) =>
        {
            int length = span.Length;
            ulong runStart = 0, runLength = 0;
            for (int block = 0; block < length; block += HoleGranularity)
            {
                int blockLength = Math.Min(HoleGranularity, length - block);
                ulong at = position + (ulong)block;
                bool zero = at % HoleGranularity == 0 && blockLength == HoleGranularity && !span.Slice(block, blockLength).ContainsAnyExcept((byte)0);
                if (zero)
                {
                    runStart = runLength == 0 ? at : runStart;
                    runLength += (ulong)blockLength;
                    continue;
                }

                ImageOptimizer.PunchHole(handle, path, runStart, runLength);
                runLength = 0;
            }

            ImageOptimizer.PunchHole(handle, path, runStart, runLength);
        }, cancellationToken);

        PositionalFile.Flush(handle);
    }

    /// <summary>Copies the file's data into <paramref name="target"/>, leaving every 4 KiB block of zeros a hole.</summary>
    public static void CopySparse(SafeFileHandle source, SafeFileHandle target, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        RandomAccess.SetLength(target, RandomAccess.GetLength(source));
        ForEachDataChunk(source, path, progress, (position, span) =>
        {
            for (int block = 0; block < span.Length; block += HoleGranularity)
            {
                ReadOnlySpan<byte> piece = span.Slice(block, Math.Min(HoleGranularity, span.Length - block));
                if (piece.ContainsAnyExcept((byte)0))
                {
                    RandomAccess.Write(target, piece, (long)position + block);
                }
            }
        }, cancellationToken);
    }

    /// <summary>Reads the file's data a chunk at a time, skipping its holes (SEEK_DATA through the block reader), and reports progress.</summary>
    private static void ForEachDataChunk(SafeFileHandle handle, string path, IProgress<ImageProgress>? progress, DataChunk visit, CancellationToken cancellationToken)
    {
        using IBlockReader reader = BlockReaders.Open(path, new BlockOpenOptions { Format = ImageFormat.Raw, ForceShare = true });
        ulong size = (ulong)RandomAccess.GetLength(handle);
        byte[] buffer = new byte[Chunk];
        foreach (Extent extent in reader.GetExtents(0, reader.Size).Where(e => e.Kind == ExtentKind.Data).ToList())
        {
            for (ulong position = extent.Offset; position < extent.End; position += Chunk)
            {
                cancellationToken.ThrowIfCancellationRequested();
                int length = (int)Math.Min(Chunk, extent.End - position);
                Span<byte> span = buffer.AsSpan(0, length);
                ImageIo.ReadExactly(handle, span, position, path);
                visit(position, span);
                progress?.Report(new ImageProgress(position + (ulong)length, size));
            }
        }
    }
}
