using System.Globalization;
using System.Xml.Linq;
using KvmStorage.Core.Backends;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Images;
using KvmStorage.Core.Images.Convert;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Core.Domains.Jobs;

/// <summary>
/// The storage of running VMs through libvirt: backups (push mode, full or incremental over checkpoints), disk moves
/// (block copy and pivot), active merges (block commit and pivot) and disk-only external snapshots. A shut-off VM's
/// disks are copied and its definition edited by the native engine instead; a running VM needs a live backend
/// (<see cref="IBlockJobs"/>), and offline its commands say so (<c>LibvirtDaemonRequired</c>). Each operation is planned
/// (every refusal made, nothing written) and then run; a failure or a cancellation leaves the VM on its old disks and
/// removes what the operation made.
/// </summary>
public sealed class VMDiskJobs(IKvmHost host)
{
    /// <summary>The prefix of the checkpoints Backup-VMDisk makes (and of the description that maps them to backup files).</summary>
    public const string CheckpointPrefix = "kvmstorage-";

    private const string BackupDescription = "KvmStorage backup:";
    private static readonly TimeSpan Poll = TimeSpan.FromMilliseconds(100);

    // ----- backups ---------------------------------------------------------------------------------------------

    /// <summary>Checks a backup of <paramref name="vm"/>'s disks into <paramref name="pool"/>; nothing is written.</summary>
    public DiskBackupPlan PlanBackup(string vm, IReadOnlyList<string>? targets, string pool, string? name, bool incremental)
    {
        (bool running, IBlockJobs? jobs, DomainDefinition domain) = Current(vm, $"Backing up running VM '{vm}'");
        if (incremental && !running)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, DiskJobErrorIds.IncrementalNeedsRunningVM, $"An incremental backup of '{vm}' comes from the dirty bitmaps a running QEMU keeps; '{vm}' is shut off, so back it up in full (without -Incremental).", vm);
        }

        IReadOnlyList<DomainDisk> all = domain.Disks;
        DomainDisk[] chosen = ChooseDisks(vm, all, targets);
        var transfer = new VolumeTransfer(host);
        string stamp = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
        string stem = name is null ? $"{vm}-{stamp}" : Path.GetFileNameWithoutExtension(name);

        var files = new List<DiskBackupFile>();
        foreach (DomainDisk disk in chosen)
        {
            string fileName = chosen.Length == 1 && name is not null ? WithQcow2(name) : $"{stem}-{disk.Target}.qcow2";
            string local = transfer.NewVolumePath(pool, fileName);

            StorageVolume source = host.GetVolumeByPath(host.Paths.Resolve(disk.SourcePath!));
            if (source.Encryption is not null)
            {
                throw new KvmStorageException(ErrorKind.NotSupported, DiskJobErrorIds.EncryptedDiskNotMovable, $"Disk {disk.Target} of '{vm}' is encrypted; Backup-VMDisk does not back up encrypted disks yet. Leave it out with -Target, and copy it with Copy-Volume -Passphrase while the VM is shut off.", source.Path);
            }

            files.Add(new DiskBackupFile(disk, source, local, host.Paths.ToHostPath(local) ?? local));
        }

        if (files.Select(f => f.LocalPath).Distinct(StringComparer.Ordinal).Count() != files.Count)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, DiskJobErrorIds.InvalidBackupName, "-Name names one file, but several disks are backed up: give a stem (it gets each disk's target appended) or back up one -Target.", name);
        }

        string? checkpoint = null;
        string? previous = null;
        if (running)
        {
            bool bitmaps = files.All(f => f.Source.ImageFormat == ImageFormat.Qcow2);
            if (incremental)
            {
                if (!bitmaps)
                {
                    throw new KvmStorageException(ErrorKind.NotSupported, DiskJobErrorIds.IncrementalNeedsQcow2, $"An incremental backup needs dirty bitmaps, which only qcow2 disks keep; {string.Join(", ", files.Where(f => f.Source.ImageFormat != ImageFormat.Qcow2).Select(f => $"{f.Disk.Target} ({f.Source.Format})"))} of '{vm}' cannot have one.", vm);
                }

                VMDiskCheckpoint last = ListCheckpoints(vm).Where(c => c.Name.StartsWith(CheckpointPrefix, StringComparison.Ordinal) && files.All(f => c.Backups.ContainsKey(f.Disk.Target)))
                    .OrderByDescending(c => c.CreationTime).ThenByDescending(c => c.Name, StringComparer.Ordinal).FirstOrDefault()
                    ?? throw new KvmStorageException(ErrorKind.NotFound, DiskJobErrorIds.NoPreviousBackup, $"'{vm}' has no checkpoint of an earlier Backup-VMDisk covering {string.Join(", ", files.Select(f => f.Disk.Target))}: make a full backup first.", vm);
                foreach (DiskBackupFile file in files)
                {
                    string prior = last.Backups[file.Disk.Target];
                    if (!File.Exists(host.Paths.Resolve(prior)))
                    {
                        throw new KvmStorageException(ErrorKind.NotFound, DiskJobErrorIds.NoPreviousBackup, $"The backup '{prior}' of {file.Disk.Target} that checkpoint '{last.Name}' follows is gone; an incremental backup needs it as its backing file. Make a full backup.", prior);
                    }

                    file.Backing = prior;
                }

                previous = last.Name;
            }

            // Every full or incremental backup of qcow2 disks starts a checkpoint, for the next incremental one.
            checkpoint = bitmaps ? CheckpointPrefix + DateTime.UtcNow.ToString("yyyyMMdd-HHmmss-fff", CultureInfo.InvariantCulture) : null;
        }

        return new DiskBackupPlan(vm, running, files, all, pool, checkpoint, previous) { Jobs = jobs };
    }

    /// <summary>Runs a backup plan; returns the backup volumes (each an incremental one backed by the previous).</summary>
    public IReadOnlyList<StorageVolume> Backup(DiskBackupPlan plan, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var made = new List<string>();
        try
        {
            if (!plan.Running)
            {
                // A shut-off VM: nothing changes under the copy; a plain conversion of each disk.
                var transfer = new VolumeTransfer(host);
                foreach (DiskBackupFile file in plan.Files)
                {
                    made.Add(file.LocalPath);
                    transfer.Convert(file.Source, file.LocalPath, new ConvertOptions { Format = ImageFormat.Qcow2 }, progress, cancellationToken);
                }
            }
            else
            {
                foreach (DiskBackupFile file in plan.Files)
                {
                    string? backing = file.Backing is null ? null : SameFolder(file.HostPath, file.Backing) ? Path.GetFileName(file.Backing) : file.Backing;
                    made.Add(file.LocalPath);
                    ImageCreator.Create(file.LocalPath, new ImageCreateOptions
                    {
                        Format = ImageFormat.Qcow2,
                        VirtualSize = file.Source.Capacity,
                        BackingFile = backing,
                        BackingFormat = backing is null ? null : ImageFormat.Qcow2,
                    }, null, cancellationToken);
                }

                RunBackupJob(plan, progress, cancellationToken);
            }
        }
        catch
        {
            foreach (string path in made)
            {
                TryDelete(path);
            }

            throw;
        }

        host.RefreshAfterWrite(plan.Pool, $"The backup of '{plan.VMName}' was written");
        return [.. plan.Files.Select(f => host.GetVolumeByPath(f.LocalPath))];
    }

    private static void RunBackupJob(DiskBackupPlan plan, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        IBlockJobs jobs = plan.Jobs!;
        string backupXml = BackupXml(plan);
        string? checkpointXml = plan.Checkpoint is null ? null : CheckpointXml(plan);
        jobs.BeginBackup(plan.VMName, backupXml, checkpointXml);
        try
        {
            while (true)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    jobs.AbortJob(plan.VMName);
                    WaitForDomainJobEnd(jobs, plan.VMName);
                    cancellationToken.ThrowIfCancellationRequested();
                }

                (int type, ulong done, ulong total) = jobs.GetJob(plan.VMName);
                if (type == 0)
                {
                    break;
                }

                if (total > 0)
                {
                    progress?.Report(new ImageProgress(Math.Min(done, total), total));
                }

                Thread.Sleep(Poll);
            }

            int ended = jobs.GetCompletedJob(plan.VMName);
            if (ended is 4 or 5)
            {
                throw new KvmStorageException(ErrorKind.WriteError, DiskJobErrorIds.BackupFailed, $"libvirt's backup job of '{plan.VMName}' {(ended == 4 ? "failed" : "was cancelled")}; see the daemon's log. Nothing was kept.", plan.VMName);
            }
        }
        catch
        {
            if (plan.Checkpoint is not null)
            {
                // The checkpoint began with the backup: without the backup it would mislead the next incremental one.
                try
                {
                    jobs.DeleteCheckpoint(plan.VMName, plan.Checkpoint);
                }
                catch (KvmStorageException)
                {
                }
            }

            throw;
        }
    }

    private static void WaitForDomainJobEnd(IBlockJobs jobs, string vm)
    {
        for (int i = 0; i < 600 && jobs.GetJob(vm).Type != 0; i++)
        {
            Thread.Sleep(Poll);
        }
    }

    private static string BackupXml(DiskBackupPlan plan)
    {
        var disks = new XElement("disks");
        foreach (DomainDisk disk in plan.AllDisks)
        {
            DiskBackupFile? file = plan.Files.FirstOrDefault(f => f.Disk.Target == disk.Target);
            disks.Add(file is null
                ? new XElement("disk", new XAttribute("name", disk.Target), new XAttribute("backup", "no"))
                : new XElement(
                    "disk",
                    new XAttribute("name", disk.Target),
                    new XAttribute("backup", "yes"),
                    new XAttribute("type", "file"),
                    new XElement("driver", new XAttribute("type", "qcow2")),
                    new XElement("target", new XAttribute("file", file.HostPath))));
        }

        var backup = new XElement("domainbackup", new XAttribute("mode", "push"));
        if (plan.PreviousCheckpoint is not null)
        {
            backup.Add(new XElement("incremental", plan.PreviousCheckpoint));
        }

        backup.Add(disks);
        return backup.ToString();
    }

    private static string CheckpointXml(DiskBackupPlan plan) => new XElement(
        "domaincheckpoint",
        new XElement("name", plan.Checkpoint),
        new XElement("description", BackupDescription + " " + string.Join("; ", plan.Files.Select(f => $"{f.Disk.Target}={f.HostPath}"))),
        new XElement("disks", plan.AllDisks.Select(d => new XElement(
            "disk",
            new XAttribute("name", d.Target),
            new XAttribute("checkpoint", plan.Files.Any(f => f.Disk.Target == d.Target) ? "bitmap" : "no"))))).ToString();

    // ----- checkpoints -----------------------------------------------------------------------------------------

    /// <summary>The VM's checkpoints (libvirt's), oldest first; those of Backup-VMDisk name their backup files.</summary>
    public IReadOnlyList<VMDiskCheckpoint> ListCheckpoints(string vm)
    {
        IBlockJobs jobs = RequireJobs($"Listing the checkpoints of '{vm}'", vm, checkpoints: true);
        var list = new List<VMDiskCheckpoint>();
        foreach (string xml in jobs.ListCheckpointXml(vm))
        {
            list.Add(VMDiskCheckpoint.Parse(xml, vm, host.Name));
        }

        // libvirt's creation times are whole seconds; the module's names carry milliseconds and sort within one.
        return [.. list.OrderBy(c => c.CreationTime).ThenBy(c => c.Name, StringComparer.Ordinal)];
    }

    /// <summary>Deletes a checkpoint: its bitmaps merge into the one before it, so later incremental backups stay whole.</summary>
    public void RemoveCheckpoint(string vm, string name)
    {
        IBlockJobs jobs = RequireJobs($"Removing checkpoint '{name}' of '{vm}'", vm, checkpoints: true);
        if (!ListCheckpoints(vm).Any(c => c.Name == name))
        {
            throw new KvmStorageException(ErrorKind.NotFound, DiskJobErrorIds.CheckpointNotFound, $"'{vm}' has no checkpoint named '{name}'.", name);
        }

        jobs.DeleteCheckpoint(vm, name);
    }

    // ----- moves -----------------------------------------------------------------------------------------------

    /// <summary>Checks a move of disk <paramref name="target"/> of <paramref name="vm"/> into <paramref name="pool"/>; nothing is written.</summary>
    public DiskMovePlan PlanMove(string vm, string target, string pool, string? name, ImageFormat? format, bool removeSource)
    {
        (bool running, IBlockJobs? jobs, DomainDefinition domain) = Current(vm, $"Moving a disk of running VM '{vm}'");
        DomainDisk disk = ChooseDisks(vm, domain.Disks, [target])[0];
        StorageVolume source = host.GetVolumeByPath(host.Paths.Resolve(disk.SourcePath!));
        if (source.Encryption is not null)
        {
            throw new KvmStorageException(ErrorKind.NotSupported, DiskJobErrorIds.EncryptedDiskNotMovable, $"Disk {target} of '{vm}' is encrypted; moving encrypted disks is not supported yet.", source.Path);
        }

        ImageFormat outFormat = format ?? (source.ImageFormat is ImageFormat.Raw ? ImageFormat.Raw : ImageFormat.Qcow2);
        if (outFormat is not (ImageFormat.Raw or ImageFormat.Qcow2))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, DiskJobErrorIds.InvalidMoveFormat, $"A moved disk is qcow2 or raw, not {outFormat.ToQemuName()}.", target);
        }

        string fileName = name ?? Path.GetFileNameWithoutExtension(source.Name) + "." + outFormat.ToQemuName();
        VolumeNames.FormatFor(fileName, outFormat, outFormat);
        string local = new VolumeTransfer(host).NewVolumePath(pool, fileName);

        if (removeSource && source.Pool is null)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, DiskJobErrorIds.SourceNotInPool, $"'{source.Path}' is in no storage pool; -RemoveSource deletes pool volumes only.", source.Path);
        }

        return new DiskMovePlan(vm, running, disk, source, local, host.Paths.ToHostPath(local) ?? local, outFormat, pool, removeSource) { Jobs = jobs };
    }

    /// <summary>Runs a move: the VM (running or not) uses the new image afterwards, in both definitions.</summary>
    public DomainDisk Move(DiskMovePlan plan, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        try
        {
            if (plan.Running)
            {
                ImageCreator.Create(plan.LocalPath, new ImageCreateOptions { Format = plan.Format, VirtualSize = plan.Source.Capacity }, null, cancellationToken);
                string dest = new XElement(
                    "disk",
                    new XAttribute("type", "file"),
                    new XElement("source", new XAttribute("file", plan.HostPath)),
                    new XElement("driver", new XAttribute("type", plan.Format.ToQemuName()))).ToString();
                plan.Jobs!.StartBlockCopy(plan.VMName, plan.Disk.Target, dest);
                MirrorThenPivot(plan.Jobs, plan.VMName, plan.Disk.Target, "block copy", progress, cancellationToken);
            }
            else
            {
                new VolumeTransfer(host).Convert(plan.Source, plan.LocalPath, new ConvertOptions { Format = plan.Format }, progress, cancellationToken);
            }
        }
        catch
        {
            TryDelete(plan.LocalPath);
            throw;
        }

        DomainDisk moved = FollowInPersistentDefinition(plan.VMName, plan.Disk.Target, plan.Source.Path, plan.HostPath, plan.Format.ToQemuName());
        host.RefreshAfterWrite(plan.Pool, $"Disk {plan.Disk.Target} of '{plan.VMName}' was moved to '{plan.HostPath}'");
        if (plan.RemoveSource)
        {
            host.RemoveVolume(plan.Source.Pool!, plan.Source.Name, force: false);
        }

        return moved;
    }

    // ----- active merge ----------------------------------------------------------------------------------------

    /// <summary>
    /// Checks a merge of the active overlay <paramref name="overlay"/> of running VM <paramref name="vm"/> into its
    /// backing file through libvirt's block commit; nothing is written.
    /// </summary>
    public ActiveCommitPlan PlanActiveCommit(string vm, StorageVolume overlay, string? baseLocalPath, bool removeOverlay, bool force)
    {
        ArgumentNullException.ThrowIfNull(overlay);
        IBlockJobs jobs = RequireJobs($"Merging the active overlay of running VM '{vm}'", vm);
        DomainDefinition live = host.GetLiveDomain(vm) ?? host.GetDomain(vm);
        DomainDisk disk = live.Disks.FirstOrDefault(d => d.SourcePath == overlay.Path)
            ?? throw new KvmStorageException(ErrorKind.InvalidOperation, DiskJobErrorIds.NotActiveLayer, $"'{overlay.Path}' is not the image a disk of running VM '{vm}' writes to (a layer below it is read-only to the VM); merging inside a running VM's chain is not supported, only its top overlay into the layer below.", overlay.Path);
        if (overlay.BackingPath is null || overlay.Image.BackingChain.Count == 0)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, Images.Chains.MergeErrorIds.NoBackingFile, $"Volume '{overlay.Path}' has no backing file: there is nothing to merge it into.", overlay.Name);
        }

        StorageVolume baseVolume = host.GetVolumeByPath(overlay.Image.BackingChain[0].Path);
        if (baseLocalPath is not null && !string.Equals(Path.GetFullPath(baseLocalPath), baseVolume.LocalPath, StringComparison.Ordinal))
        {
            throw new KvmStorageException(ErrorKind.NotSupported, DiskJobErrorIds.NotActiveLayer, $"A running VM's overlay merges into its own backing file ('{baseVolume.Path}') only; merge deeper layers with the VM shut off.", baseLocalPath);
        }

        string[] others = [.. baseVolume.AttachedTo.Where(v => v != vm), .. BackingUsers.Find(host, baseVolume.Path, new HashSet<string>(StringComparer.Ordinal) { overlay.Path, baseVolume.Path }, overlay.Path)];
        if (others.Length > 0 && !force)
        {
            throw new KvmStorageException(ErrorKind.InvalidOperation, Images.Chains.MergeErrorIds.BackingShared, $"Merging '{overlay.Path}' into '{baseVolume.Path}' would change what {string.Join(", ", others.Distinct())} read. Use -Force to merge anyway.", overlay.Name);
        }

        return new ActiveCommitPlan(vm, disk, overlay, baseVolume, removeOverlay) { Jobs = jobs };
    }

    /// <summary>Runs an active merge: the VM keeps running on the base, which now holds the overlay's data.</summary>
    public StorageVolume ActiveCommit(ActiveCommitPlan plan, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(plan);
        plan.Jobs!.StartActiveCommit(plan.VMName, plan.Disk.Target);
        MirrorThenPivot(plan.Jobs, plan.VMName, plan.Disk.Target, "block commit", progress, cancellationToken);
        FollowInPersistentDefinition(plan.VMName, plan.Disk.Target, plan.Overlay.Path, plan.Base.Path, plan.Base.Format);
        if (plan.RemoveOverlay)
        {
            if (plan.Overlay.Pool is { } pool)
            {
                host.RemoveVolume(pool, plan.Overlay.Name, force: false);
            }
            else
            {
                File.Delete(plan.Overlay.LocalPath);
            }
        }

        if (plan.Base.Pool is { } basePool)
        {
            host.RefreshAfterWrite(basePool, $"'{plan.Overlay.Path}' was merged into '{plan.Base.Path}'");
        }

        return host.GetVolumeByPath(plan.Base.LocalPath);
    }

    // ----- disk-only snapshots ---------------------------------------------------------------------------------

    /// <summary>Checks a disk-only external snapshot of <paramref name="vm"/>'s disks; nothing is written.</summary>
    public DiskSnapshotPlan PlanSnapshot(string vm, IReadOnlyList<string>? targets, string name)
    {
        VolumeNames.Validate(name + ".qcow2");
        (bool running, IBlockJobs? jobs, DomainDefinition domain) = Current(vm, $"Taking a disk snapshot of running VM '{vm}'");
        DomainDisk[] chosen = ChooseDisks(vm, domain.Disks, targets);
        var overlays = new List<DiskOverlay>();
        foreach (DomainDisk disk in chosen)
        {
            StorageVolume source = host.GetVolumeByPath(host.Paths.Resolve(disk.SourcePath!));
            if (source.Encryption is not null)
            {
                throw new KvmStorageException(ErrorKind.NotSupported, DiskJobErrorIds.EncryptedDiskNotMovable, $"Disk {disk.Target} of '{vm}' is encrypted; disk snapshots of encrypted disks are not supported yet.", source.Path);
            }

            string local = Path.Combine(Path.GetDirectoryName(source.LocalPath)!, $"{Path.GetFileNameWithoutExtension(source.Name)}-{name}.qcow2");
            if (File.Exists(local))
            {
                throw new KvmStorageException(ErrorKind.AlreadyExists, VolumeErrorIds.VolumeExists, $"'{host.Paths.ToHostPath(local) ?? local}' already exists; choose another snapshot name.", local);
            }

            overlays.Add(new DiskOverlay(disk, source, local, host.Paths.ToHostPath(local) ?? local));
        }

        return new DiskSnapshotPlan(vm, running, name, domain.Disks, overlays) { Jobs = jobs };
    }

    /// <summary>Runs a snapshot plan: each disk continues on a new qcow2 overlay of its image; returns the overlays.</summary>
    public IReadOnlyList<StorageVolume> Snapshot(DiskSnapshotPlan plan)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var made = new List<string>();
        try
        {
            foreach (DiskOverlay overlay in plan.Overlays)
            {
                made.Add(overlay.LocalPath);
                ImageCreator.Create(overlay.LocalPath, new ImageCreateOptions
                {
                    Format = ImageFormat.Qcow2,
                    BackingFile = Path.GetFileName(overlay.Source.LocalPath),
                    BackingFormat = overlay.Source.ImageFormat,
                    VirtualSize = overlay.Source.Capacity,
                });
            }

            if (plan.Running)
            {
                var disks = new XElement("disks", plan.AllDisks.Select(d => plan.Overlays.FirstOrDefault(o => o.Disk.Target == d.Target) is { } o
                    ? new XElement(
                        "disk",
                        new XAttribute("name", d.Target),
                        new XAttribute("snapshot", "external"),
                        new XAttribute("type", "file"),
                        new XElement("source", new XAttribute("file", o.HostPath)),
                        new XElement("driver", new XAttribute("type", "qcow2")))
                    : new XElement("disk", new XAttribute("name", d.Target), new XAttribute("snapshot", "no"))));
                plan.Jobs!.CreateDiskOnlySnapshot(plan.VMName, new XElement("domainsnapshot", new XElement("name", plan.Name), disks).ToString());
            }
        }
        catch
        {
            foreach (string path in made)
            {
                TryDelete(path);
            }

            throw;
        }

        foreach (DiskOverlay overlay in plan.Overlays)
        {
            FollowInPersistentDefinition(plan.VMName, overlay.Disk.Target, overlay.Source.Path, overlay.HostPath, "qcow2");
            if (overlay.Source.Pool is { } pool)
            {
                host.RefreshAfterWrite(pool, $"The snapshot overlay '{overlay.HostPath}' was written");
            }
        }

        return [.. plan.Overlays.Select(o => host.GetVolumeByPath(o.LocalPath))];
    }

    // ----- shared ----------------------------------------------------------------------------------------------

    /// <summary>
    /// Waits for a mirror (block copy, active commit) to be ready, reporting its progress, then pivots the disk to it.
    /// A cancellation, or a job that ends on its own before it is ready (a failure), abandons the copy: the VM stays on
    /// the image it had.
    /// </summary>
    private static void MirrorThenPivot(IBlockJobs jobs, string vm, string target, string what, IProgress<ImageProgress>? progress, CancellationToken cancellationToken)
    {
        while (true)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                jobs.EndBlockJob(vm, target, pivot: false);
                WaitForBlockJobEnd(jobs, vm, target);
                cancellationToken.ThrowIfCancellationRequested();
            }

            (_, ulong cur, ulong end) = jobs.GetBlockJob(vm, target)
                ?? throw new KvmStorageException(ErrorKind.WriteError, DiskJobErrorIds.BlockJobFailed, $"The {what} of disk {target} of '{vm}' ended before it was ready; the VM stays on its old image (see the daemon's log).", vm);
            if (end > 0)
            {
                progress?.Report(new ImageProgress(Math.Min(cur, end), end));
            }

            if (end > 0 && cur == end)
            {
                break;
            }

            Thread.Sleep(Poll);
        }

        jobs.EndBlockJob(vm, target, pivot: true);
        WaitForBlockJobEnd(jobs, vm, target);
    }

    private static void WaitForBlockJobEnd(IBlockJobs jobs, string vm, string target)
    {
        for (int i = 0; i < 600 && jobs.GetBlockJob(vm, target) is not null; i++)
        {
            Thread.Sleep(Poll);
        }
    }

    /// <summary>The persistent definition follows what the running VM now uses (libvirt updates only the live one for transient jobs).</summary>
    private DomainDisk FollowInPersistentDefinition(string vm, string target, string oldHostPath, string newHostPath, string format) =>
        host.EditDomain(vm, d =>
        {
            DomainDisk disk = d.FindDisk(target) ?? throw new KvmStorageException(ErrorKind.NotFound, DomainErrorIds.DiskNotFound, $"'{vm}' has no disk {target} in its persistent definition.", target);
            return disk.SourcePath == oldHostPath ? new DomainDiskEditor(d).ReplaceSource(target, newHostPath, format) : disk;
        });

    private static DomainDisk[] ChooseDisks(string vm, IReadOnlyList<DomainDisk> all, IReadOnlyList<string>? targets)
    {
        DomainDisk[] files = [.. all.Where(d => d.Device == "disk" && d.SourcePath is not null && !d.ReadOnly)];
        if (targets is null || targets.Count == 0)
        {
            return files.Length > 0
                ? files
                : throw new KvmStorageException(ErrorKind.InvalidOperation, DiskJobErrorIds.NoDiskToBackUp, $"'{vm}' has no writable disk with an image file.", vm);
        }

        return [.. targets.Select(t => files.FirstOrDefault(d => d.Target == t)
            ?? (all.Any(d => d.Target == t)
                ? throw new KvmStorageException(ErrorKind.InvalidOperation, DiskJobErrorIds.DiskNotCopyable, $"Disk {t} of '{vm}' is not a writable disk with an image file (a cdrom, a read-only disk, or a network source).", t)
                : throw new KvmStorageException(ErrorKind.NotFound, DomainErrorIds.DiskNotFound, $"'{vm}' has no disk {t}.", t)))];
    }

    /// <summary>Whether the VM runs; if so the daemon's jobs (refused offline as <paramref name="what"/>) and its live definition, else its persistent one.</summary>
    private (bool Running, IBlockJobs? Jobs, DomainDefinition Domain) Current(string vm, string what)
    {
        if (!host.IsDomainActive(vm))
        {
            return (false, null, host.GetDomain(vm));
        }

        IBlockJobs jobs = RequireJobs(what, vm);
        return (true, jobs, host.GetLiveDomain(vm) ?? host.GetDomain(vm));
    }

    private IBlockJobs RequireJobs(string what, string vm, bool checkpoints = false) =>
        host as IBlockJobs ?? throw new KvmStorageException(
            ErrorKind.NotSupported,
            BackendErrorIds.DaemonRequired,
            checkpoints
                ? $"{what} goes through libvirtd, which keeps the checkpoints; the offline backend ({host.Name}) only edits files. Connect with Connect-LibvirtHost."
                : $"{what} goes through libvirtd (its backup, block copy and block commit jobs); the offline backend ({host.Name}) only edits files. Connect with Connect-LibvirtHost, or shut the VM off first.",
            vm);

    private static bool SameFolder(string a, string b) => string.Equals(Path.GetDirectoryName(a), Path.GetDirectoryName(b), StringComparison.Ordinal);

    private static string WithQcow2(string name) => Path.GetExtension(name).Length == 0 ? name + ".qcow2" : name;

    private static void TryDelete(string path)
    {
        try
        {
            File.Delete(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }
}
