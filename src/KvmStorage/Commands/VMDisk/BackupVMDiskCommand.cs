using System.Management.Automation;
using KvmStorage.Core.Domains.Jobs;
using KvmStorage.Core.Volumes;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDisk;

/// <summary>
/// Backup-VMDisk: a point-in-time backup of a VM's disks into a pool. A running VM is backed up through libvirt's
/// backup job (push mode) while it runs, full or -Incremental over libvirt checkpoints (an incremental backup is a
/// qcow2 whose backing file is the previous backup); a shut-off VM's images are copied. Ctrl+C aborts the job and
/// removes what it wrote.
/// </summary>
[Cmdlet(VerbsData.Backup, "VMDisk", SupportsShouldProcess = true)]
[OutputType(typeof(StorageVolume))]
public sealed class BackupVMDiskCommand : KvmCmdlet
{
    /// <summary>The VM whose disks are backed up.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>The disks to back up (vda, sdb, …); by default every writable disk with an image file.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(DiskTargetCompleter))]
    public string[]? Target { get; set; }

    /// <summary>The pool (a local folder pool) the backup files are written to.</summary>
    [Parameter(Mandatory = true)]
    [ArgumentCompleter(typeof(PoolNameCompleter))]
    public PoolReference Pool { get; set; } = null!;

    /// <summary>The backup's name: each disk's file is NAME-TARGET.qcow2 (NAME.qcow2 when one disk is backed up); default VM-yyyyMMdd-HHmmss.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string? Name { get; set; }

    /// <summary>Only the clusters changed since the last Backup-VMDisk of these disks, over that backup (running VMs, qcow2 disks).</summary>
    [Parameter]
    public SwitchParameter Incremental { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(VMName, () =>
        {
            var jobs = new VMDiskJobs(KvmHost);
            DiskBackupPlan plan = jobs.PlanBackup(VMName, Target, Pool.Name, Name, Incremental);
            if (ShouldProcess(VMName, plan.Description))
            {
                IReadOnlyList<StorageVolume> backups = RunWithProgress("Backup-VMDisk", $"Backing up {VMName}", (progress, token) => jobs.Backup(plan, progress, token));
                WriteObject(backups, enumerateCollection: true);
            }
        });
    }
}
