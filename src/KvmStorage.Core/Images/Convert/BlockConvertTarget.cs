using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Convert;

/// <summary>
/// An output whose guest space is mapped by equal blocks (vhdx payload blocks, vhd blocks, vdi blocks): a dynamic image
/// allocates a block when the first data of it arrives, at the end of the file, so blocks follow guest order; a fixed
/// one has every block in place from the start. Either way only units holding data are written: what reads as zeros
/// stays a hole of the file, inside allocated blocks too.
/// </summary>
internal abstract class BlockConvertTarget : ConvertTarget
{
    /// <summary>The zero-detection unit: small enough that zeros inside a block stay holes, large enough to stream.</summary>
    internal const int DefaultUnit = 64 * 1024;

    private const int CoalesceBytes = 4 * 1024 * 1024;

    private readonly WriteCoalescer coalescer;

    protected BlockConvertTarget(SafeFileHandle handle, ulong guestSize, ulong blockSize)
    {
        Handle = handle;
        GuestSize = guestSize;
        BlockSize = blockSize;
        coalescer = new WriteCoalescer(handle, CoalesceBytes);
    }

    public override int Unit => (int)Math.Min(DefaultUnit, BlockSize);

    protected SafeFileHandle Handle { get; }

    /// <summary>The source's size: data past it (the padding of the last unit) is never written.</summary>
    protected ulong GuestSize { get; }

    protected ulong BlockSize { get; }

    /// <summary>Where block <paramref name="block"/>'s guest data starts in the file, allocating the block if it is new.</summary>
    protected abstract ulong BlockData(ulong block);

    public override void Write(ConvertChunk chunk)
    {
        foreach ((int start, int count) in chunk.DataRuns())
        {
            ulong guest = chunk.UnitOffset(start);
            ulong end = Math.Min(GuestSize, guest + ((ulong)count * (ulong)chunk.Unit));
            int at = start * chunk.Unit;
            while (guest < end)
            {
                ulong block = guest / BlockSize;
                ulong inBlock = guest % BlockSize;
                int n = (int)Math.Min(end - guest, BlockSize - inBlock);
                coalescer.Write(BlockData(block) + inBlock, chunk.Data.AsSpan(at, n));
                guest += (ulong)n;
                at += n;
            }
        }
    }

    /// <summary>Writes a format's own bytes in the stream of data (a block's bitmap ahead of its data), coalesced with it.</summary>
    protected void WriteInline(ulong offset, ReadOnlySpan<byte> bytes) => coalescer.Write(offset, bytes);

    /// <summary>Writes out what the coalescer still holds; the formats' metadata follows it.</summary>
    protected void FlushData() => coalescer.Flush();
}
