using System.Buffers.Binary;
using System.Text;
using KvmStorage.Core.Images.Convert;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Vmdk;

/// <summary>
/// A streamOptimized VMDK (for VMware) written as <c>qemu-img convert -O vmdk -o subformat=streamOptimized</c> does
/// (qemu's block/vmdk.c; the VMDK specification's "Stream-Optimized Compressed Sparse Extents"): version 3, flags newline-detect | redundant GD | compressed | markers,
/// the descriptor at sector 1, both grain directories and their grain tables reserved in the header area, then
/// each non-zero 64 KiB grain as a zlib stream behind a <c>{u64 lba, u32 size}</c> marker, sector-aligned,
/// in guest order; an end-of-stream marker (a zero sector) closes the file.
/// </summary>
internal sealed class VmdkStreamConvertTarget : ConvertTarget
{
    internal const int GrainBytes = (int)VmdkSparseLayout.GrainSectors * 512;
    private const ulong GrainSectors = VmdkSparseLayout.GrainSectors;
    private const uint GtesPerGt = VmdkSparseLayout.GtesPerGt;
    private const int MarkerBytes = 12;

    private readonly SafeFileHandle handle;
    private readonly string fileName;
    private readonly ulong size;
    private readonly VmdkSparseLayout layout;
    private readonly uint[] gt = new uint[GtesPerGt];
    private readonly WriteCoalescer coalescer;
    private readonly byte[] marker = new byte[512];
    private long currentGt = -1;
    private ulong nextSector;

    public VmdkStreamConvertTarget(SafeFileHandle handle, string finalPath, ulong size)
    {
        this.handle = handle;
        fileName = Path.GetFileName(finalPath);
        this.size = size;
        layout = new VmdkSparseLayout((size + 511) / 512);
        coalescer = new WriteCoalescer(handle, 4 * 1024 * 1024);
        Compressor = new ClusterCompressor.DeflateClusterCompressor(zlibWrapped: true);
    }

    public override int Unit => GrainBytes;

    public override ClusterCompressor Compressor { get; }

    public override void Begin(CancellationToken cancellationToken)
    {
        // The grain tables start as holes (every grain unallocated); the ones that get entries are written as the stream passes them.
        RandomAccess.SetLength(handle, checked((long)(layout.GrainOffset * 512)));
        nextSector = layout.GrainOffset;
    }

    public override void Write(ConvertChunk chunk)
    {
        for (int i = 0; i < chunk.UnitCount; i++)
        {
            if (chunk.States[i] != UnitState.Compressed)
            {
                continue;
            }

            ulong grain = chunk.UnitOffset(i) / GrainBytes;
            long table = (long)(grain / GtesPerGt);
            if (table != currentGt)
            {
                FlushGrainTable();
                currentGt = table;
                Array.Clear(gt);
            }

            ReadOnlySpan<byte> payload = chunk.UnitPayload(i);
            gt[grain % GtesPerGt] = checked((uint)nextSector);
            BinaryPrimitives.WriteUInt64LittleEndian(marker, grain * GrainSectors);
            BinaryPrimitives.WriteUInt32LittleEndian(marker.AsSpan(8), (uint)payload.Length);
            ulong offset = nextSector * 512;
            coalescer.Write(offset, marker.AsSpan(0, MarkerBytes));
            coalescer.Write(offset + MarkerBytes, payload);
            int used = MarkerBytes + payload.Length;
            int padding = (512 - (used % 512)) % 512;
            if (padding > 0)
            {
                coalescer.Write(offset + (ulong)used, new byte[padding]);
            }

            nextSector += (ulong)(used + padding) / 512;
        }
    }

    public override void Complete(CancellationToken cancellationToken)
    {
        FlushGrainTable();

        // End-of-stream marker: a zero sector (lba 0, size 0, type 0).
        coalescer.Write(nextSector * 512, new byte[512]);
        coalescer.Flush();
        RandomAccess.SetLength(handle, checked((long)((nextSector + 1) * 512)));
        layout.WriteDirectory(handle, layout.RedundantGdOffset, CancellationToken.None);
        layout.WriteDirectory(handle, layout.GdOffset, CancellationToken.None);
        cancellationToken.ThrowIfCancellationRequested();

        byte[] head = new byte[512 * (1 + (int)VmdkSparseLayout.DescriptorSectors)];
        const uint flags = VmdkSparseHeader.FlagNewlineDetect | VmdkSparseHeader.FlagRedundantGd | VmdkSparseHeader.FlagCompressed | VmdkSparseHeader.FlagMarkers;
        layout.Header(3, flags, VmdkSparseHeader.CompressDeflate).WriteTo(head);
        Encoding.ASCII.GetBytes(VmdkWriter.Descriptor(fileName, layout.Capacity * 512, "streamOptimized"), head.AsSpan(512));
        RandomAccess.Write(handle, head, 0);
    }

    private void FlushGrainTable()
    {
        if (currentGt < 0)
        {
            return;
        }

        coalescer.Flush();
        byte[] table = new byte[GtesPerGt * 4];
        for (int i = 0; i < gt.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(table.AsSpan(i * 4), gt[i]);
        }

        ulong index = (ulong)currentGt;
        RandomAccess.Write(handle, table, (long)(layout.GrainTable(layout.RedundantGdOffset, index) * 512));
        RandomAccess.Write(handle, table, (long)(layout.GrainTable(layout.GdOffset, index) * 512));
        currentGt = -1;
    }

    internal ulong Size => size;
}
