namespace KvmStorage.Core.Backends;

/// <summary>
/// What a running libvirt daemon does for the disks of running VMs (libvirt's backup, checkpoint, block copy, block
/// commit and disk-only snapshot APIs). Only a live backend has it; <c>Domains/Jobs</c> drives it.
/// </summary>
internal interface IBlockJobs
{
    /// <summary>Starts a push-mode backup; with <paramref name="checkpointXml"/> a checkpoint is created with it.</summary>
    void BeginBackup(string vm, string backupXml, string? checkpointXml);

    /// <summary>The domain job: type (0 none, 1 bounded, 2 unbounded), bytes done, bytes total.</summary>
    (int Type, ulong Done, ulong Total) GetJob(string vm);

    /// <summary>How the last domain job ended: 3 completed, 4 failed, 5 cancelled, 0 unknown.</summary>
    int GetCompletedJob(string vm);

    void AbortJob(string vm);

    IReadOnlyList<string> ListCheckpointXml(string vm);

    void DeleteCheckpoint(string vm, string name);

    void StartBlockCopy(string vm, string disk, string destinationXml);

    void StartActiveCommit(string vm, string disk);

    /// <summary>The disk's block job (type, cur, end), or null when none runs.</summary>
    (int Type, ulong Cur, ulong End)? GetBlockJob(string vm, string disk);

    void EndBlockJob(string vm, string disk, bool pivot);

    void CreateDiskOnlySnapshot(string vm, string snapshotXml);
}
