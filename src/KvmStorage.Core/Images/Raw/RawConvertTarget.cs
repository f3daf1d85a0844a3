using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Raw;

/// <summary>
/// A raw output: the file is truncated to the virtual size first (a hole throughout), then only non-zero
/// 4 KiB blocks are written, so zeros and unallocated ranges of the source stay holes.
/// </summary>
internal sealed class RawConvertTarget(SafeFileHandle handle, string path, ulong size, Preallocation preallocation) : ConvertTarget
{
    internal const int Block = 4096;

    public override int Unit => Block;

    public override void Begin(CancellationToken cancellationToken) =>
        RawImageWriter.Allocate(handle, 0, size, preallocation, path, null, cancellationToken);

    public override void Write(ConvertChunk chunk)
    {
        foreach ((int start, int count) in chunk.DataRuns())
        {
            ulong offset = chunk.UnitOffset(start);
            ulong length = Math.Min((ulong)count * Block, size - offset);
            RandomAccess.Write(handle, chunk.Data.AsSpan(start * Block, (int)length), (long)offset);
        }
    }

    public override void Complete(CancellationToken cancellationToken)
    {
    }
}
