using KvmStorage.Core.Errors;
using KvmStorage.Core.Images.Check;
using KvmStorage.Core.IO;
using Microsoft.Win32.SafeHandles;

namespace KvmStorage.Core.Images.Qcow2;

/// <summary>
/// Checks and repairs a qcow2 image the way <c>qemu-img check</c> does (qemu's block/qcow2-refcount.c,
/// <c>qcow2_check_refcounts</c>): rebuild every cluster's reference count from the metadata, compare it with the
/// stored refcounts, then check the copied flags of the active tables. The counts it reports are qemu's.
/// </summary>
/// <remarks>
/// The check is split by what it does: the driver of a check or repair here, the repairs in
/// <c>Qcow2Checker.Repair.cs</c>, the analysis of one pass in <c>Qcow2Checker.Analysis.cs</c> (its bookkeeping),
/// <c>Qcow2Checker.Walk.cs</c> (the references the metadata makes) and <c>Qcow2Checker.Refcounts.cs</c> (the stored
/// refcounts compared with them: leaks, overflows, copied flags).
/// </remarks>
internal sealed partial class Qcow2Checker
{
    private const int MaxFindings = 10_000;

    private readonly SafeFileHandle handle;
    private readonly string path;
    private readonly IProgress<ImageProgress>? progress;
    private readonly CancellationToken cancellationToken;

    public Qcow2Checker(SafeFileHandle handle, string path, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        this.handle = handle;
        this.path = path;
        this.progress = progress;
        this.cancellationToken = cancellationToken;
    }

    public ImageCheckResult Run(ImageRepairMode mode)
    {
        Analysis before = Analyze(countRefcountStructures: true);
        if (mode == ImageRepairMode.None)
        {
            return ToResult(before, before);
        }

        if (mode == ImageRepairMode.Leaks)
        {
            // qemu-img check -r leaks: fixing leaks in place is only safe when the refcount structure itself is sound.
            if (before.Rebuild)
            {
                Analysis unchanged = Analyze(countRefcountStructures: true);
                unchanged.NeedsRebuild();
                return ToResult(before, unchanged);
            }

            if (before.Leaks > 0)
            {
                FreeLeaks(before);
            }

            // qemu then repairs copied flags too when they are the only errors left: freeing a leak can bring a
            // shared cluster back to refcount 1 (a snapshot create killed midway leaves exactly that).
            Analysis afterLeaks = Analyze(countRefcountStructures: true);
            if (afterLeaks.CopiedFixes.Count > 0 && afterLeaks.Corruptions == (ulong)afterLeaks.CopiedFixes.Count && afterLeaks.Leaks == 0 && afterLeaks.CheckErrors == 0)
            {
                WriteEntries(afterLeaks.CopiedFixes);
            }
        }
        else
        {
            RepairAll(before);
        }

        Analysis after = Analyze(countRefcountStructures: true);
        if (after.Corruptions == 0 && after.CheckErrors == 0)
        {
            ClearDirtyAndCorruptBits(after.Header);
            after = Analyze(countRefcountStructures: true);
        }

        return ToResult(before, after);
    }

    private void RepairAll(Analysis before)
    {
        Analysis current = before;

        // 1. Entries that point outside the file or at misaligned places: after this they read as zeros (or are
        //    unallocated). Clearing a pointer first and fixing refcounts later can at worst leak a cluster.
        if (current.StructuralFixes.Count > 0)
        {
            WriteEntries(current.StructuralFixes);
            current = Analyze(countRefcountStructures: true);
        }

        // 2. Any refcount mismatch: a new refcount structure from the references, switched to in one header write.
        if (current.RefcountMismatch || current.Rebuild)
        {
            cancellationToken.ThrowIfCancellationRequested();
            RebuildRefcounts();
            current = Analyze(countRefcountStructures: true);
        }

        // 3. Copied flags from the now correct refcounts.
        if (current.CopiedFixes.Count > 0)
        {
            WriteEntries(current.CopiedFixes);
        }
    }

    /// <summary>
    /// Reads a qcow2 header for optimizing: refused unless it is consistent (a check finds nothing) and of a kind
    /// this code rewrites (no extended L2, external data file or encryption).
    /// </summary>
    internal static Qcow2Header ReadSoundHeader(SafeFileHandle handle, string path, out byte[] cluster0)
    {
        ImageCheckResult check = new Qcow2Checker(handle, path, null, CancellationToken.None).Run(ImageRepairMode.None);
        if (check.Errors > 0 || check.MarkedCorrupt || check.DirtyFlag)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, ImageErrorIds.ImageCorrupt, $"'{path}' has {check.Errors} error(s){(check.DirtyFlag ? " and the dirty bit set" : string.Empty)}; repair it with 'Test-Volume -Repair All' first.", path);
        }

        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, fileLength, path);
        if (header.ExtendedL2 || header.DataFile is not null || (header.IncompatibleFeatures & Qcow2Header.IncompatDataFile) != 0 || header.CryptMethod != 0)
        {
            throw ImageErrors.NotSupported(ImageErrorIds.UnsupportedOperation, path, "optimizing qcow2 images with extended L2 entries, an external data file or encryption is not supported.");
        }

        cluster0 = new byte[header.ClusterSize];
        PositionalFile.ReadZeroPadded(handle, cluster0, 0);
        return header;
    }

    private ImageCheckResult ToResult(Analysis before, Analysis after) => new()
    {
        Path = path,
        ImageFormat = ImageFormat.Qcow2,
        CorruptionCount = after.Corruptions,
        CheckErrors = after.CheckErrors,
        Leaks = after.Leaks,
        Corruptions = after.Findings,
        CorruptionsFixed = before.Corruptions > after.Corruptions ? before.Corruptions - after.Corruptions : 0,
        LeaksFixed = before.Leaks > after.Leaks ? before.Leaks - after.Leaks : 0,
        ImageEndOffset = (after.HighestCluster + 1) * after.Header.ClusterSize,
        TotalClusters = Qcow2Layout.CeilDiv(after.Header.Size & ~511UL, after.Header.ClusterSize),
        AllocatedClusters = after.Allocated,
        FragmentedClusters = after.Fragmented,
        CompressedClusters = after.Compressed,
        DirtyFlag = after.Header.Dirty,
        MarkedCorrupt = after.Header.Corrupt,
    };

    private Analysis Analyze(bool countRefcountStructures)
    {
        ulong fileLength = (ulong)RandomAccess.GetLength(handle);
        byte[] head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(64UL * 1024, fileLength), path);
        // qemu opens images whose tables lie past the end of the file (they read as zeros) and reports them as
        // corruptions, so the header is validated here without the end-of-file rule.
        Qcow2Header header = Qcow2Reader.ReadHeader(handle, head, long.MaxValue, path);
        if (header.ClusterSize > (ulong)head.Length && fileLength > (ulong)head.Length)
        {
            head = ImageIo.ReadBytes(handle, 0, (int)Math.Min(header.ClusterSize, fileLength), path);
        }

        var analysis = new Analysis(this, header, fileLength);
        analysis.Run(head, countRefcountStructures);
        return analysis;
    }

    /// <summary>Reads, filling what lies past the end of the file with zeros (as qemu's file driver does).</summary>
    private void ReadPadded(Span<byte> buffer, ulong offset) => PositionalFile.ReadZeroPadded(handle, buffer, offset);
}
