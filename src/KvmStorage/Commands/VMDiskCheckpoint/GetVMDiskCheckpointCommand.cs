using System.Management.Automation;
using KvmStorage.Core.Domains.Jobs;
using KvmStorage.Infrastructure;

namespace KvmStorage.Commands.VMDiskCheckpoint;

/// <summary>
/// Get-VMDiskCheckpoint: a VM's libvirt checkpoints, oldest first: the points incremental backups continue from,
/// with their bitmapped disks and, for Backup-VMDisk's, the backup file of each disk. Needs libvirtd.
/// </summary>
[Cmdlet(VerbsCommon.Get, "VMDiskCheckpoint")]
[OutputType(typeof(Core.Domains.Jobs.VMDiskCheckpoint))]
public sealed class GetVMDiskCheckpointCommand : KvmCmdlet
{
    /// <summary>The VM.</summary>
    [Parameter(Mandatory = true, Position = 0, ValueFromPipelineByPropertyName = true)]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(VMNameCompleter))]
    public string VMName { get; set; } = string.Empty;

    /// <summary>Checkpoints by name (wildcards allowed).</summary>
    [Parameter(Position = 1)]
    [ValidateNotNullOrEmpty]
    [SupportsWildcards]
    public string[]? Name { get; set; }

    protected override void ProcessRecord()
    {
        RunForItem(VMName, () =>
        {
            IReadOnlyList<Core.Domains.Jobs.VMDiskCheckpoint> all = new VMDiskJobs(KvmHost).ListCheckpoints(VMName);
            if (Name is null)
            {
                WriteObject(all, enumerateCollection: true);
                return;
            }

            foreach (string name in Name)
            {
                var pattern = new WildcardPattern(name, WildcardOptions.None);
                Core.Domains.Jobs.VMDiskCheckpoint[] found = [.. all.Where(c => pattern.IsMatch(c.Name))];
                if (found.Length == 0 && !WildcardPattern.ContainsWildcardCharacters(name))
                {
                    WriteError(new Core.Errors.KvmStorageException(Core.Errors.ErrorKind.NotFound, DiskJobErrorIds.CheckpointNotFound, $"'{VMName}' has no checkpoint named '{name}'.", name), name);
                }

                WriteObject(found, enumerateCollection: true);
            }
        });
    }
}
