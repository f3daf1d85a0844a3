using System.Buffers.Binary;
using System.Numerics;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// A preallocated qcow2 output (metadata, falloc, full): the image is first created exactly as
/// <c>qemu-img create -o preallocation=…</c> lays it out, every guest cluster mapped at a fixed host offset,
/// then the source's data is written in place. With metadata preallocation on v3 the L2 entries carry the
/// zero flag; it is cleared for each cluster that receives data.
/// </summary>
internal sealed class Qcow2PreallocatedConvertTarget : ConvertTarget
{
    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly ImageCreateOptions options;
    private readonly Qcow2Layout layout;
    private readonly bool clearZeroFlags;
    private readonly uint cs;

    public Qcow2PreallocatedConvertTarget(SafeFileHandle handle, string path, ulong size, uint clusterSize, string compat, Preallocation preallocation)
    {
        this.handle = handle;
        this.path = path;
        cs = clusterSize;
        options = new ImageCreateOptions { Format = ImageFormat.Qcow2, VirtualSize = size, ClusterSize = clusterSize, Compat = compat, Preallocation = preallocation };
        layout = Qcow2Layout.Compute(size, BitOperations.Log2(clusterSize), 16, mapAllData: true, path);
        clearZeroFlags = preallocation == Preallocation.Metadata && Qcow2ImageWriter.ParseCompat(compat) >= 3;
    }

    public override int Unit => (int)cs;

    public override void Begin(CancellationToken cancellationToken) =>
        new Qcow2ImageWriter().Create(handle, path, options, null, cancellationToken);

    public override void Write(ConvertChunk chunk)
    {
        foreach ((int start, int count) in chunk.DataRuns())
        {
            ulong firstCluster = chunk.UnitOffset(start) / cs;
            ImageIo.Write(handle, chunk.Data.AsSpan(start * (int)cs, count * (int)cs), layout.DataOffset + (firstCluster * cs));
            if (clearZeroFlags)
            {
                // The guest clusters' L2 entries are contiguous: preallocated L2 tables follow each other in guest order.
                byte[] entries = new byte[count * 8];
                for (int k = 0; k < count; k++)
                {
                    ulong entry = Qcow2Entries.Owned(layout.DataOffset + ((firstCluster + (ulong)k) * cs));
                    BinaryPrimitives.WriteUInt64BigEndian(entries.AsSpan(k * 8), entry);
                }

                ImageIo.Write(handle, entries, layout.L2Offset + (firstCluster * 8));
            }
        }
    }

    public override void Complete(CancellationToken cancellationToken)
    {
    }
}
