using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vdi;

/// <summary>
/// A VDI output (<c>qemu-img convert -O vdi</c>): dynamic, each block given the next index in the file as its first
/// data arrives; static, every block in place. The block map and the header are written once the data is out.
/// </summary>
internal sealed class VdiConvertTarget(SafeFileHandle handle, ulong guestSize, VdiLayout layout)
    : BlockConvertTarget(handle, guestSize, VdiLayout.BlockSize)
{
    private readonly List<(ulong Block, uint Index)> allocated = [];
    private long lastBlock = -1;
    private ulong lastData;

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
            uint index = (uint)allocated.Count;
            allocated.Add((block, index));
            lastData = layout.DataOffset + ((ulong)index * BlockSize);
        }

        return lastData;
    }

    public override void Complete(CancellationToken cancellationToken)
    {
        FlushData();
        if (!layout.Fixed)
        {
            RandomAccess.SetLength(Handle, checked((long)(layout.DataOffset + ((ulong)allocated.Count * BlockSize))));
        }

        cancellationToken.ThrowIfCancellationRequested();
        layout.WriteMetadata(Handle, allocated);
    }
}
