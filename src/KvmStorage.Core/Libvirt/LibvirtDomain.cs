namespace KvmStorage.Core.Libvirt;

/// <summary>A domain handle (<c>virDomainPtr</c>).</summary>
public sealed class LibvirtDomain : LibvirtObject
{
    private readonly DomainHandle handle;

    internal LibvirtDomain(DomainHandle handle)
        : base(handle, LibvirtNative.virDomainGetName(handle)) => this.handle = handle;

    public bool IsActive => LibvirtLibrary.Check(LibvirtNative.virDomainIsActive(handle), "virDomainIsActive", Name) == 1;

    public bool IsPersistent => LibvirtLibrary.Check(LibvirtNative.virDomainIsPersistent(handle), "virDomainIsPersistent", Name) == 1;

    /// <summary>The live XML (running VM) or, with <paramref name="inactive"/>, the persistent one.</summary>
    public string GetXml(bool inactive) =>
        LibvirtNative.TakeString(LibvirtNative.virDomainGetXMLDesc(handle, inactive ? LibvirtNative.VIR_DOMAIN_XML_INACTIVE : 0)) ?? throw LibvirtLibrary.LastError("virDomainGetXMLDesc", Name);

    public void AttachDevice(string xml, LibvirtModificationImpact impact) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainAttachDeviceFlags(handle, xml, (uint)impact), "virDomainAttachDeviceFlags", Name);

    public void UpdateDevice(string xml, LibvirtModificationImpact impact) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainUpdateDeviceFlags(handle, xml, (uint)impact), "virDomainUpdateDeviceFlags", Name);

    public void DetachDevice(string xml, LibvirtModificationImpact impact) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainDetachDeviceFlags(handle, xml, (uint)impact), "virDomainDetachDeviceFlags", Name);

    /// <summary>Starts a push-mode backup (virDomainBackupBegin), with a checkpoint when <paramref name="checkpointXml"/> is given.</summary>
    public void BeginBackup(string backupXml, string? checkpointXml, bool reuseExternal) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainBackupBegin(handle, backupXml, checkpointXml, reuseExternal ? LibvirtNative.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL : 0), "virDomainBackupBegin", Name);

    /// <summary>The running job's type (0 none, 1 bounded, 2 unbounded) and bytes done of bytes total.</summary>
    public (int Type, ulong Processed, ulong Total) GetJobInfo()
    {
        LibvirtLibrary.Check(LibvirtNative.virDomainGetJobInfo(handle, out LibvirtNative.VirDomainJobInfo info), "virDomainGetJobInfo", Name);
        return (info.Type, info.DataProcessed, info.DataTotal);
    }

    /// <summary>How the last job ended: 3 completed, 4 failed, 5 cancelled (virDomainGetJobStats with the COMPLETED flag); 0 when unknown.</summary>
    public int GetCompletedJobType()
    {
        if (LibvirtNative.virDomainGetJobStats(handle, out int type, out IntPtr parameters, out int count, LibvirtNative.VIR_DOMAIN_JOB_STATS_COMPLETED) < 0)
        {
            // No record of a completed job: libvirt keeps it only until the next job starts.
            _ = LibvirtLibrary.LastError("virDomainGetJobStats", Name);
            return 0;
        }

        LibvirtNative.virTypedParamsFree(parameters, count);
        return type;
    }

    public void AbortJob() => LibvirtLibrary.Check(LibvirtNative.virDomainAbortJob(handle), "virDomainAbortJob", Name);

    /// <summary>Every checkpoint's XML (virDomainListAllCheckpoints, virDomainCheckpointGetXMLDesc).</summary>
    public IReadOnlyList<string> ListCheckpointXml()
    {
        int count = LibvirtLibrary.Check(LibvirtNative.virDomainListAllCheckpoints(handle, out IntPtr array, 0), "virDomainListAllCheckpoints", Name);
        return LibvirtConnection.TakeArray(array, count, p =>
        {
            try
            {
                return LibvirtNative.TakeString(LibvirtNative.virDomainCheckpointGetXMLDesc(p, 0)) ?? throw LibvirtLibrary.LastError("virDomainCheckpointGetXMLDesc", Name);
            }
            finally
            {
                _ = LibvirtNative.virDomainCheckpointFree(p);
            }
        });
    }

    /// <summary>Deletes a checkpoint and its bitmaps (or, with <paramref name="metadataOnly"/>, libvirt's record of it only).</summary>
    public void DeleteCheckpoint(string name, bool metadataOnly)
    {
        IntPtr checkpoint = LibvirtNative.virDomainCheckpointLookupByName(handle, name, 0);
        if (checkpoint == IntPtr.Zero)
        {
            throw LibvirtLibrary.LastError("virDomainCheckpointLookupByName", name);
        }

        try
        {
            LibvirtLibrary.Check(LibvirtNative.virDomainCheckpointDelete(checkpoint, metadataOnly ? LibvirtNative.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY : 0), "virDomainCheckpointDelete", name);
        }
        finally
        {
            _ = LibvirtNative.virDomainCheckpointFree(checkpoint);
        }
    }

    /// <summary>Starts a block copy of <paramref name="disk"/> into the destination the XML describes (a transient job: the persistent definition is the caller's).</summary>
    public void BlockCopy(string disk, string destinationXml, bool reuseExternal) =>
        LibvirtLibrary.Check(
            LibvirtNative.virDomainBlockCopy(handle, disk, destinationXml, IntPtr.Zero, 0, LibvirtNative.VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB | (reuseExternal ? LibvirtNative.VIR_DOMAIN_BLOCK_COPY_REUSE_EXT : 0)),
            "virDomainBlockCopy",
            Name);

    /// <summary>
    /// Starts an active block commit of <paramref name="disk"/>'s top image into its own backing file (SHALLOW: without it
    /// a null base means the bottom of the whole chain).
    /// </summary>
    public void BlockCommitActive(string disk) =>
        LibvirtLibrary.Check(
            LibvirtNative.virDomainBlockCommit(handle, disk, null, null, 0, LibvirtNative.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE | LibvirtNative.VIR_DOMAIN_BLOCK_COMMIT_SHALLOW),
            "virDomainBlockCommit",
            Name);

    /// <summary>The disk's block job, or null when it has none: its type and progress (cur of end; equal once a mirror is ready).</summary>
    public (int Type, ulong Cur, ulong End)? GetBlockJob(string disk)
    {
        int found = LibvirtLibrary.Check(LibvirtNative.virDomainGetBlockJobInfo(handle, disk, out LibvirtNative.VirDomainBlockJobInfo info, 0), "virDomainGetBlockJobInfo", Name);
        return found == 0 ? null : (info.Type, info.Cur, info.End);
    }

    /// <summary>Ends a block job: with <paramref name="pivot"/> the disk switches to the copy; without, the copy is abandoned.</summary>
    public void AbortBlockJob(string disk, bool pivot) =>
        LibvirtLibrary.Check(LibvirtNative.virDomainBlockJobAbort(handle, disk, pivot ? LibvirtNative.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT : 0), "virDomainBlockJobAbort", Name);

    /// <summary>A disk-only external snapshot without libvirt metadata (the domain's disks move to the new overlays, atomically).</summary>
    public void CreateDiskOnlySnapshot(string snapshotXml, bool reuseExternal)
    {
        uint flags = LibvirtNative.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | LibvirtNative.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC | LibvirtNative.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA
            | (reuseExternal ? LibvirtNative.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT : 0);
        IntPtr snapshot = LibvirtNative.virDomainSnapshotCreateXML(handle, snapshotXml, flags);
        if (snapshot == IntPtr.Zero)
        {
            throw LibvirtLibrary.LastError("virDomainSnapshotCreateXML", Name);
        }

        _ = LibvirtNative.virDomainSnapshotFree(snapshot);
    }

    /// <summary>Creates a checkpoint alone (virDomainCheckpointCreateXML).</summary>
    public void CreateCheckpoint(string xml)
    {
        IntPtr checkpoint = LibvirtNative.virDomainCheckpointCreateXML(handle, xml, 0);
        if (checkpoint == IntPtr.Zero)
        {
            throw LibvirtLibrary.LastError("virDomainCheckpointCreateXML", Name);
        }

        _ = LibvirtNative.virDomainCheckpointFree(checkpoint);
    }
}
