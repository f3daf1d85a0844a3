using KvmStorage.Core.Images.Raw;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Convert;

/// <summary>
/// A raw output: the file is truncated to the virtual size first (a hole throughout), then only non-zero
/// 4 KiB blocks are written, so zeros and unallocated ranges of the source stay holes.
/// </summary>
internal sealed class RawConvertTarget(SafeFileHandle handle, string path, ulong size, Preallocation preallocation) : ConvertTarget
{
    private const int Block = 4096;

    public override int Unit => Block;

    public override void Begin(CancellationToken cancellationToken) =>
        RawImageWriter.Allocate(handle, 0, size, preallocation, path, null, cancellationToken);

    public override void Write(ConvertChunk chunk)
    {
        int i = 0;
        while (i < chunk.UnitCount)
        {
            if (chunk.States[i] != UnitState.Data)
            {
                i++;
                continue;
            }

            int start = i;
            while (i < chunk.UnitCount && chunk.States[i] == UnitState.Data)
            {
                i++;
            }

            ulong offset = chunk.UnitOffset(start);
            ulong length = Math.Min((ulong)(i - start) * Block, size - offset);
            RandomAccess.Write(handle, chunk.Data.AsSpan(start * Block, (int)length), (long)offset);
        }
    }

    public override void Complete(CancellationToken cancellationToken)
    {
    }
}

/// <summary>Gathers small writes that land back to back in the file into one large write.</summary>
internal sealed class WriteCoalescer(SafeFileHandle handle, int capacity)
{
    private readonly byte[] buffer = new byte[capacity];
    private ulong start;
    private int length;

    public void Write(ulong offset, ReadOnlySpan<byte> data)
    {
        if (length > 0 && (offset != start + (ulong)length || length + data.Length > buffer.Length))
        {
            Flush();
        }

        if (data.Length > buffer.Length)
        {
            RandomAccess.Write(handle, data, (long)offset);
            return;
        }

        if (length == 0)
        {
            start = offset;
        }

        data.CopyTo(buffer.AsSpan(length));
        length += data.Length;
    }

    public void Flush()
    {
        if (length > 0)
        {
            RandomAccess.Write(handle, buffer.AsSpan(0, length), (long)start);
            length = 0;
        }
    }
}
