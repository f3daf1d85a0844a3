using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vpc;

/// <summary>
/// A VHD output (<c>qemu-img convert -O vpc</c>): fixed, the data in place and the footer after it; dynamic, each block
/// (its bitmap of all-present sectors, then its data) appended as its first data arrives, the table, header and both
/// footers written once the data is out.
/// </summary>
internal sealed class VpcConvertTarget(SafeFileHandle handle, ulong guestSize, VpcLayout layout)
    : BlockConvertTarget(handle, guestSize, VpcLayout.BlockSize)
{
    private static readonly byte[] Bitmap = CreateBitmap();

    private readonly List<(ulong Block, ulong Offset)> allocated = [];
    private ulong next = layout.FirstBlockOffset;
    private long lastBlock = -1;
    private ulong lastData;

    public override void Begin(CancellationToken cancellationToken) =>
        RandomAccess.SetLength(Handle, checked((long)layout.EmptyLength));

    protected override ulong BlockData(ulong block)
    {
        if (layout.Fixed)
        {
            return block * BlockSize;
        }

        // Blocks arrive in guest order: a block is new exactly when it is not the last one allocated.
        if ((long)block != lastBlock)
        {
            lastBlock = (long)block;
            allocated.Add((block, next));
            WriteInline(next, Bitmap);
            lastData = next + VpcLayout.BitmapSize;
            next = lastData + BlockSize;
        }

        return lastData;
    }

    public override void Complete(CancellationToken cancellationToken)
    {
        FlushData();
        cancellationToken.ThrowIfCancellationRequested();
        if (layout.Fixed)
        {
            RandomAccess.Write(Handle, layout.Footer(Guid.NewGuid()), (long)layout.VirtualSize);
            return;
        }

        RandomAccess.SetLength(Handle, checked((long)(next + Vpc.VpcHeaders.FooterLength)));
        layout.WriteDynamicMetadata(Handle, allocated, next);
    }

    private static byte[] CreateBitmap()
    {
        byte[] bitmap = new byte[VpcLayout.BitmapSize];
        Array.Fill(bitmap, (byte)0xFF);
        return bitmap;
    }
}
