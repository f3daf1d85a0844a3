using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vhdx;

/// <summary>
/// A VHDX output (<c>qemu-img convert -O vhdx</c>): payload blocks appended in guest order as their first data arrives
/// (dynamic), or all in place (fixed); the BAT, metadata, region tables and headers are written once the data is out,
/// the file identifier last.
/// </summary>
internal sealed class VhdxConvertTarget(SafeFileHandle handle, ulong guestSize, VhdxLayout layout)
    : BlockConvertTarget(handle, guestSize, layout.BlockSize)
{
    private readonly List<(ulong Block, ulong Offset)> allocated = [];
    private ulong next = layout.DataOffset;
    private long lastBlock = -1;
    private ulong lastOffset;

    public override void Begin(CancellationToken cancellationToken) =>
        RandomAccess.SetLength(Handle, checked((long)layout.EmptyLength));

    protected override ulong BlockData(ulong block)
    {
        if (layout.Fixed)
        {
            return layout.DataOffset + (block * BlockSize);
        }

        // Blocks arrive in guest order: a block is new exactly when it is not the last one allocated.
        if ((long)block != lastBlock)
        {
            lastBlock = (long)block;
            lastOffset = next;
            next += BlockSize;
            allocated.Add((block, lastOffset));
        }

        return lastOffset;
    }

    public override void Complete(CancellationToken cancellationToken)
    {
        FlushData();

        // The last block is whole in the file even where the guest ends inside it.
        RandomAccess.SetLength(Handle, checked((long)Math.Max(next, layout.EmptyLength)));
        cancellationToken.ThrowIfCancellationRequested();
        layout.WriteMetadata(Handle, allocated);
    }
}
